-- Install an APK on instances; the package URL is a signed secret and
-- never appears in output.
local koophone = require "koophone"

local client = assert(koophone.new())
local task, err = client:install_app({
  object_name = "com.example.game", file_name = "game.apk", object_version = "2.4.1",
  object_size = 120, fast_install = 1,
  install_package_url = os.getenv("APK_URL") or
    "https://bucket.obs.example.com/game.apk?AccessKeyId=AK&Expires=1&Signature=SIG",
}, { "kp000001", "kp000002" })
if not task then io.stderr:write(tostring(err), "\n") os.exit(1) end
print("install task " .. task.id)
for _, row in ipairs(assert(task:wait { timeout = 120 })) do
  print(row.id, row.status, row.code or "")
end
