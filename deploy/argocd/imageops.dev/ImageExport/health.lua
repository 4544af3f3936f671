-- Argo CD health of an ImageExport (imageops.dev/v1alpha1).
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

-- "Exporting 45% (m-123 to my-bucket)": the phase, the progress, the image and where it goes;
-- the file's name once the operator knows it.
local function summary(status)
  local text = status.phase or "Pending"
  if status.progress ~= nil and status.phase ~= "Exported" then
    text = text .. " " .. status.progress
  end
  local image = obj.spec and obj.spec.imageId
  local bucket = obj.spec and obj.spec.ossBucket
  if image ~= nil and bucket ~= nil then
    local target = bucket
    if status.ossObject ~= nil then
      target = target .. "/" .. status.ossObject
    end
    text = text .. " (" .. image .. " to " .. target .. ")"
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
  health.message = "Waiting for the operator to pick up this ImageExport"
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
