-- IAM: POST /v3/auth/tokens (password identity) and token checks.
local util = require "koophone_emulator.util"

local ngx = ngx
local TOK = ngx.shared.kp_tokens

local M = {}

local function unauthorized(msg)
  return 401, util.iam_err(401, msg or "The username or password is wrong.", "Unauthorized")
end

function M.token(cfg)
  local body = util.read_json()
  if not body then return 400, util.iam_err(400, "The request body is not valid JSON.", "Bad Request") end
  local auth = type(body.auth) == "table" and body.auth or nil
  local ident = auth and type(auth.identity) == "table" and auth.identity or nil
  if not ident then return 400, util.iam_err(400, "The request body is invalid: auth.identity is missing.", "Bad Request") end
  local has_password = false
  if type(ident.methods) == "table" then
    for _, m in ipairs(ident.methods) do if m == "password" then has_password = true end end
  end
  local user = type(ident.password) == "table" and type(ident.password.user) == "table" and ident.password.user or nil
  if not has_password or not user then
    return 400, util.iam_err(400, "The request body is invalid: a password identity is required.", "Bad Request")
  end
  local dom = type(user.domain) == "table" and user.domain.name or nil
  local iam = cfg.iam
  if user.name ~= iam.user or user.password ~= iam.password or dom ~= iam.domain then
    return unauthorized()
  end
  local project = { id = cfg.project_id, name = cfg.project_name }
  local scope = type(auth.scope) == "table" and auth.scope or nil
  if scope and type(scope.project) == "table" then
    local p = scope.project
    if (p.id ~= nil and p.id ~= cfg.project_id) or (p.id == nil and p.name ~= cfg.project_name) then
      return unauthorized("The project ID or name is invalid.")
    end
  end
  ngx.update_time()
  local now = ngx.now()
  local n = util.reserve("token", 1)
  local token = "MIIEemu" .. ngx.md5(cfg.seed .. ":token:" .. n .. ":" .. now)
    .. ngx.md5(now .. ":" .. ngx.worker.pid() .. ":" .. n)
  local ttl = tonumber(cfg.token_ttl) or 86400
  TOK:set(token, now + ttl, ttl > 0 and ttl or 0.001)
  local domain = { id = ngx.md5("domain:" .. iam.domain), name = iam.domain }
  project.domain = domain
  return 201, {
    token = {
      expires_at = util.iso(now + ttl, 6),
      issued_at = util.iso(now, 6),
      methods = { "password" },
      project = project,
      user = { id = ngx.md5("user:" .. iam.user), name = iam.user, domain = domain, password_expires_at = "" },
      catalog = nil,
    },
  }, { ["X-Subject-Token"] = token }
end

-- GET /v3/projects?name=REGION (KeystoneListProjects): how the SDKs find
-- the project id of a region; the emulator has one project, cfg.project_id,
-- named cfg.project_name.
function M.projects(cfg)
  local args = ngx.req.get_uri_args()
  local name = type(args.name) == "string" and args.name or nil
  local list = {}
  if name == nil or name == cfg.project_name then
    list[1] = { id = cfg.project_id, name = cfg.project_name, enabled = true, is_domain = false,
                domain_id = ngx.md5("domain:" .. cfg.iam.domain), parent_id = ngx.md5("domain:" .. cfg.iam.domain),
                description = "" }
  end
  local body = util.encode { projects = #list > 0 and list or false,
                             links = { self = "https://iam.example/v3/projects" } }
  return 200, (body:gsub('"projects":false', '"projects":[]'))
end

-- is this X-Auth-Token accepted?
function M.valid(cfg, tok)
  if not tok then return false end
  if tok == cfg.token then return true end
  local exp = TOK:get(tok)
  return exp ~= nil and exp > ngx.now()
end

return M
