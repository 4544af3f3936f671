-- Argo CD health of an ImageReplication (imageops.dev/v1alpha1).
-- Runs with only Lua's base, table and package libraries (Argo CD's default): no string.* calls.
local health = {}

local function condition(status, type)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end

local function is_true(c)
  return c ~= nil and c.status == "True"
end

-- "2/4 regions ready, 63%": how far the replication got over all its regions.
local function summary(status)
  local text = (status.regionsReady or "0/0") .. " regions ready"
  if status.progress ~= nil then
    text = text .. ", " .. status.progress
  end
  return text
end

local status = obj.status
if status == nil then
  health.status = "Progressing"
  health.message = "Waiting for the operator to pick up this ImageReplication"
  return health
end

local generation = obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  health.status = "Progressing"
  health.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return health
end

local stalled = condition(status, "Stalled")
if is_true(stalled) then
  health.status = "Degraded"
  -- The message names every stalled region with its ECS code and message.
  health.message = "Stalled: " .. (stalled.message or stalled.reason or "")
  return health
end

local ready = condition(status, "Ready")
if is_true(ready) then
  health.status = "Healthy"
  health.message = summary(status)
  return health
end

local text = summary(status)
local queued = condition(status, "Queued")
if is_true(queued) then
  text = text .. "; " .. (queued.message or "queued")
end
local reconciling = condition(status, "Reconciling")
if ready ~= nil and ready.reason == "Deleting" and reconciling ~= nil then
  text = "Deleting: " .. (reconciling.message or "")
end
health.status = "Progressing"
health.message = text
return health
