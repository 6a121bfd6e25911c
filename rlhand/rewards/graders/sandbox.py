"""The sandbox the code grader (code.py) runs each test in: one fresh child interpreter per test.

The sandbox (Linux): each test is a `python -I -S -B` (no site-packages) in a fresh scratch folder as
cwd, deleted afterwards, with only PATH, HOME and TMPDIR (the scratch folder) in its environment and
stdin from the test (or empty), in a session of its own whose process group is SIGKILLed when it ends
or passes time_limit_s, and which dies with the grader (PR_SET_PDEATHSIG) if a reward worker is killed. The child first limits itself (not by preexec_fn, unsafe in this threaded
parent): CPU seconds, address space (memory_mb), file size (16 MB), 64 open files, no core files. An
audit hook then refuses: process creation (fork, exec, system, posix_spawn, subprocess, pty, importing
_posixsubprocess), sockets, ctypes, os.kill, raising limits, gc's object walks, links and symlinks,
device files other than /dev/null and the like, writing, deleting, renaming or chmod/chown outside the
scratch folder, and reading under the forbidden folders: the trainer's cwd (its runs, checkpoints),
the home folder (tokens, ~/.netrc, ~/.ssh), /proc (other processes' environments hold API keys) and
`forbidden_dirs`, the stdlib excepted. It resolves symlinks with functions bound before the program
runs, so patching os cannot bend it; it refuses what it cannot see the target of (path objects given
to os functions, os.open with a relative path, dir_fd). An assert test passes only if the runner then
prints a per-test random token and exits 0: printing "PASSED", sys.exit(0) or os._exit(0) do not.

NOT protected against (this guards against accidents and casual reward hacks; it is not a security
boundary): native code (extensions already loaded, an interpreter memory bug), kernel exploits, what
audit hooks do not see (ioctl, os.mknod then racing the device check, reading any file outside the
forbidden folders; the child has the trainer's user, root's powers if that is root), tampering with
the test's Python objects (a result whose __eq__ is always True passes an assert test; the token is
readable from the runner's frame: stdin/stdout and fn_name tests keep the answer in the parent), the
CPU, memory and disk bandwidth it takes from other processes. Untrusted code at scale belongs in a
container (gVisor, Firecracker, nsjail) or a sandbox service, as a non-root user without network.
"""

import json
import marshal
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile

FILE_SIZE_MB = 16
STARTUP_S = 0.5  # wall-clock allowance for the interpreter's start on top of time_limit_s

# Run by the child with -c. It reads its job, limits itself, installs the audit hook, then runs the
# program (compiled as solution.py, so tracebacks show the program's own line numbers) in a fresh
# namespace and the test after it. Builtins and os functions the hook uses are bound as defaults
# before the program starts: the program can rebind the names, not what the hook holds.
RUNNER = r"""# rlhand-code-sandbox
def main():
    import marshal, posix, resource, sys
    with open("job", "rb") as f:
        job = marshal.load(f)
    posix.remove("job")
    cpu, memory, file_size = job["limits"]
    for limit, value in ((resource.RLIMIT_CPU, (cpu, cpu + 1)), (resource.RLIMIT_AS, (memory, memory)),
                         (resource.RLIMIT_FSIZE, (file_size, file_size)), (resource.RLIMIT_NOFILE, (64, 64)),
                         (resource.RLIMIT_CORE, (0, 0))):
        resource.setrlimit(limit, value)
    try:  # die with the thread that started it, even if that process is killed (a reward worker past its limit)
        import ctypes
        ctypes.CDLL(None).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
    except Exception:
        pass
    mode, token, stdout, write = job["mode"], job["token"], sys.stdout, posix.write
    if mode == "call":
        from json import dumps
    if job["guard"]:
        guard(job["scratch"], job["forbidden"], job["readable"])
    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    exec(compile(job["program"], "solution.py", "exec"), namespace)
    if mode == "assert":
        exec(compile(job["test"], "test.py", "exec"), namespace)
        stdout.flush()
        write(1, b"\n" + token)
        posix._exit(0)  # now: no atexit handler of the program's may print after the token
    if mode == "call":
        function = namespace.get(job["name"]) or getattr(namespace["Solution"](), job["name"])
        result = dumps(function(*job["args"])).encode()
        stdout.flush()
        write(1, b"\n" + token + result)
        posix._exit(0)


def guard(scratch, forbidden, readable):
    import posix, sys
    refused_events = frozenset({"os.fork", "os.forkpty", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "subprocess.Popen",
                                "pty.spawn", "os.kill", "os.killpg", "resource.setrlimit", "resource.prlimit", "os.link", "os.symlink"})
    refused_prefixes = ("socket.", "ctypes.", "gc.get_")
    refused_modules = frozenset({"_posixsubprocess", "_ctypes", "ctypes", "_xxsubinterpreters"})
    writes = frozenset({"os.remove", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.utime", "os.truncate", "shutil.rmtree"})
    write_flags = posix.O_WRONLY | posix.O_RDWR | posix.O_CREAT | posix.O_TRUNC | posix.O_APPEND
    devices = frozenset({"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom"})

    def refuse(why, _error=PermissionError):
        raise _error("sandbox: " + why)

    def resolve(path, _type=type, _str=str, _bytes=bytes, _oserror=OSError, _getcwd=posix.getcwd, _readlink=posix.readlink):
        if _type(path) is _bytes:
            path = path.decode("utf-8", "surrogateescape")
        elif _type(path) is not _str:  # os.* events carry the object as given: its __fspath__ could answer the check and the call differently
            refuse("give file paths as str")
        parts = (path if path.startswith("/") else _getcwd() + "/" + path).split("/")
        parts.reverse()
        done, links = "", 0
        while parts:
            part = parts.pop()
            if part == "..":
                done = done[: done.rfind("/")]
            elif part and part != ".":
                try:
                    target = _readlink(done + "/" + part)
                except _oserror:  # not a symlink (or not there): a plain component
                    done += "/" + part
                    continue
                links += 1
                if links > 40:
                    refuse("too many symlinks")
                if target.startswith("/"):
                    done = ""
                more = target.split("/")
                more.reverse()
                parts += more
        return done or "/"

    def inside(path, roots):
        for root in roots:
            if path == root or path.startswith(root + "/"):
                return True
        return False

    def check(path, write, _type=type, _int=int, _oserror=OSError, _stat=posix.stat, _item=tuple.__getitem__):
        if _type(path) is _int or path is None:  # an open descriptor (checked when opened) or the cwd
            return
        path = resolve(path)
        try:  # stat_result's own attributes can be patched, tuple's item slot cannot
            kind = _item(_stat(path), 0) & 0o170000
        except _oserror:
            kind = 0
        if (kind == 0o020000 or kind == 0o060000) and path not in devices:  # a disk, /dev/mem, or one it made with os.mknod
            refuse("opening the device " + path)
        if inside(path, scratch):
            return
        if write:
            if path not in devices:
                refuse("writing " + path)
        elif inside(path, forbidden) and not inside(path, readable):
            refuse("reading " + path)

    def hook(event, args, _type=type, _paths=(str, bytes)):
        if event == "open":
            path, mode, flags = args
            if mode is None and _type(path) in _paths and path[:1] not in ("/", b"/"):
                refuse("os.open with a relative path")  # its dir_fd is not in the event
            check(path, flags & write_flags)
        elif event == "os.listdir" or event == "os.scandir":
            check(args[0], False)
        elif event == "os.rename":
            if args[2] != -1 or args[3] != -1:
                refuse("os.rename with a dir_fd")
            check(args[0], True)
            check(args[1], True)
        elif event in writes:
            if event != "os.truncate" and args[-1] is not None and args[-1] != -1:
                refuse(event + " with a dir_fd")
            check(args[0], True)
        elif event == "import":
            if args[0] in refused_modules:
                refuse("importing " + args[0])
        elif event in refused_events or event.startswith(refused_prefixes):
            refuse(event)

    sys.addaudithook(hook)


main()
"""


def lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.rstrip().splitlines()]


def run_test(program: str, test: dict, sandbox: dict, guard: bool = True) -> bool:
    """Whether `program` passes `test`. OSError only where the test could not be started at all.
    guard=False leaves out the audit hook: only for the tests that check the rest of the sandbox."""
    root = os.path.realpath(tempfile.mkdtemp(prefix="rlhand-code-"))
    try:
        scratch = os.path.join(root, "scratch")
        os.mkdir(scratch)
        token = secrets.token_hex(16).encode()
        job = {"program": program, "token": token, "guard": guard, "scratch": (scratch,), **test}
        job.update({key: sandbox[key] for key in ("limits", "forbidden", "readable")})
        job.pop("expected", None)  # the answer never enters the child
        with open(os.path.join(scratch, "job"), "wb") as f:
            marshal.dump(job, f)
        stdin_path = os.path.join(root, "stdin")
        with open(stdin_path, "w", encoding="utf-8") as f:
            f.write(test.get("stdin", ""))
        with open(stdin_path, "rb") as stdin, open(os.path.join(root, "stdout"), "w+b") as stdout:
            returncode = run_child(scratch, stdin, stdout, sandbox["wall_s"])
            if returncode != 0 or os.fstat(stdout.fileno()).st_size > sandbox["output_limit"]:
                return False
            stdout.seek(0)
            output = stdout.read()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if test["mode"] == "assert":
        return output.endswith(b"\n" + token)
    if test["mode"] == "stdio":
        return lines(output.decode("utf-8", "replace")) == lines(test["expected"])
    _, found, result = output.rpartition(b"\n" + token)
    try:
        result = json.loads(result)
    except ValueError:
        return False
    expected = test["expected"]
    return bool(found) and (result == expected or (isinstance(expected, list) and len(expected) == 1 and result == expected[0]))


def run_child(scratch: str, stdin, stdout, wall_s: float) -> int:
    env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": scratch, "TMPDIR": scratch}
    command = [sys.executable, "-I", "-S", "-B", "-c", RUNNER]
    proc = subprocess.Popen(
        command, cwd=scratch, env=env, stdin=stdin, stdout=stdout, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        # Wait on a pidfd, which does not reap: the child stays a zombie holding its process-group id,
        # so the killpg below cannot reach a group that reused the id.
        pidfd = os.pidfd_open(proc.pid)
        try:
            poll = select.poll()
            poll.register(pidfd, select.POLLIN)
            poll.poll(wall_s * 1000)
        finally:
            os.close(pidfd)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever it forked too (when the guard let it)
        except ProcessLookupError:
            pass
        proc.kill()  # in case it left its group
        proc.wait()
    return proc.returncode
