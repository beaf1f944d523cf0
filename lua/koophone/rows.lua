--- Result rows: one per instance or phone, whatever produced it.
--
--     { id = "kp000001", instance_id = "kp000001",   -- or phone_id for CPH rows
--       status = "ok" | "failed" | "error" | "timeout" | "running",
--       vendor_status = 2, output = "...", code = "CPS.0191", message = "...",
--       job_id = "...", task_id = "...", request_id = "...",
--       attempts = 1, elapsed = 0.42 }
--
-- `failed` means the vendor ran the job and said -1; `error` means we could
-- not learn the outcome (the request failed, or the reply had no entry).
-- @module koophone.rows
local core = require "koophone.core"

local M = {}
local null = core.null

--- JSON null and "" become nil; everything else becomes a string.
-- @param v
-- @treturn ?string
function M.text(v)
  if v == nil or v == null or v == "" then return nil end
  if type(v) == "table" then return nil end
  return tostring(v)
end

--- Maps the vendor's job status (1, 2, -1, as number or string).
-- @param v
-- @treturn string status, ?number vendor_status
function M.status(v)
  local n = tonumber(v)
  if n == 2 then return "ok", 2 end
  if n == -1 then return "failed", -1 end
  if n == 1 then return "running", 1 end
  return "error", n
end

--- A row from a vendor item (CmdResult, JobDetail, CPH job).
-- @tparam string id the instance or phone
-- @tparam string id_field "instance_id" or "phone_id"
-- @tparam table item the vendor's object
-- @tparam[opt] table extra fields to copy (task_id, request_id, ...)
-- @treturn table row
function M.from_item(id, id_field, item, extra)
  local status, vendor_status = M.status(item.status)
  local row = {
    id = id, [id_field] = id, status = status, vendor_status = vendor_status,
    output = M.text(item.execute_msg), code = M.text(item.error_code),
    message = M.text(item.error_msg), job_id = M.text(item.job_id),
  }
  if status == "error" and not row.message then
    row.message = "unexpected job status " .. tostring(item.status)
  end
  if extra then for k, v in pairs(extra) do if row[k] == nil then row[k] = v end end end
  return row
end

--- A row for an id whose outcome is unknown because of `err`.
-- @tparam string id
-- @tparam string id_field
-- @tparam table err a koophone error
-- @tparam[opt] table extra
-- @treturn table row
function M.from_error(id, id_field, err, extra)
  local row = { id = id, [id_field] = id, status = err.kind == "timeout" and "timeout" or "error",
                code = err.code, message = err.message, kind = err.kind,
                http_status = err.http_status, request_id = err.request_id,
                attempts = err.attempts, maybe_executed = err.maybe_executed }
  if extra then for k, v in pairs(extra) do if row[k] == nil then row[k] = v end end end
  return row
end

return M
