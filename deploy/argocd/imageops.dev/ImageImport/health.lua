-- Argo CD health of an ImageImport (imageops.dev/v1alpha1).
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

-- "Importing 45% (m-123 in cn-hangzhou)": the phase, the progress and the image being made.
local function summary(status)
  local text = status.phase or "Pending"
  if status.progress ~= nil and status.phase ~= "Available" then
    text = text .. " " .. status.progress
  end
  local region = obj.spec and obj.spec.regionId
  if status.imageId ~= nil and region ~= nil then
    text = text .. " (" .. status.imageId .. " in " .. region .. ")"
  elseif region ~= nil then
    text = text .. " (into " .. region .. ")"
  end
  return text
end

local function with_reason(prefix, c)
  local text = prefix
  if c.reason ~= nil and c.reason ~= "" then
    text = text .. ": " .. c.reason
  end
  if c.message ~= nil and c.message ~= "" then
    text = text .. ": " .. c.message
  end
  return text
end

local status = obj.status
if status == nil then
  health.status = "Progressing"
  health.message = "Waiting for the operator to pick up this ImageImport"
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
  health.message = with_reason("Stalled", stalled)
  return health
end

local ready = condition(status, "Ready")
if is_true(ready) then
  health.status = "Healthy"
  health.message = summary(status)
  return health
end

health.status = "Progressing"
health.message = summary(status)
return health
