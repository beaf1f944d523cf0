/* files.c: what a journal needs of a file that Lua's io library cannot do:
 * create it private (mode 0600: it may hold commands) and cut a torn last
 * line (a crash in the middle of a record) before new records follow. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>
#include "core.h"

static int fail_errno(lua_State *L, const char *what, const char *path) {
  int e = errno;
  lua_pushnil(L);
  lua_pushfstring(L, "%s %s: %s", what, path, strerror(e));
  return 2;
}

/* The length of the file once a last line without its newline is cut off:
 * the offset just after the last '\n' (0 when there is none). */
static off_t complete_length(int fd, off_t size) {
  char buf[4096];
  off_t end = size;
  while (end > 0) {
    off_t start = end > (off_t)sizeof buf ? end - (off_t)sizeof buf : 0;
    ssize_t n = pread(fd, buf, (size_t)(end - start), start);
    if (n <= 0) return -1;
    while (n > 0) {
      if (buf[n - 1] == '\n') return start + n;
      n--;
    }
    end = start;
  }
  return 0;
}

/* core.journal_prepare(path) -> bytes_cut | nil, message
 * Creates the file with mode 0600 when it does not exist, and truncates a
 * torn last line so that the next record starts on a line of its own. */
static int journal_prepare(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  struct stat st;
  off_t keep;
  int fd = open(path, O_RDWR | O_CREAT, 0600);
  if (fd < 0) return fail_errno(L, "cannot open journal", path);
  if (fstat(fd, &st) != 0) {
    int e = errno;
    close(fd);
    errno = e;
    return fail_errno(L, "cannot stat journal", path);
  }
  keep = st.st_size > 0 ? complete_length(fd, st.st_size) : 0;
  if (keep < 0 || (keep < st.st_size && ftruncate(fd, keep) != 0)) {
    int e = errno;
    close(fd);
    errno = e;
    return fail_errno(L, "cannot repair journal", path);
  }
  close(fd);
  lua_pushinteger(L, (lua_Integer)(st.st_size - keep));
  return 1;
}

int kp_files_open(lua_State *L) {
  lua_pushcfunction(L, journal_prepare);
  lua_setfield(L, -2, "journal_prepare");
  return 0;
}
