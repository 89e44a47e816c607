"""upm's runner for UPM-style Python class plugins.

upm starts it as `python3 -I -c <this file> <settings-json>` inside the
sandbox, with the request `{"method", "args", "request_id"}` on stdin.
It imports the plugin's module, instantiates the class with project_root,
cache_dir and the config's policy, calls the method with
`*args["args"], **args["kwargs"]`, awaits a coroutine, and writes one
envelope to fd 3 (never stdout, so whatever the plugin prints stays in the
captured stdout/stderr and cannot corrupt the result):

    {"ok": true, "result": <value>}
    {"ok": false, "kind": "method_not_found"|"import_error"|"exception"|"bad_request"|"bad_result",
     "type": "...", "message": "...", "traceback": "..."}
"""
import asyncio
import importlib
import inspect
import json
import os
import sys
import traceback


def _send(envelope, lenient=False):
    # A result must be JSON as it is; only error details may fall back to repr().
    data = json.dumps(envelope, default=repr if lenient else None, allow_nan=False).encode("utf-8")
    fd = 3
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _fail(kind, exc=None, message=None, tb=True):
    env = {"ok": False, "kind": kind}
    if exc is not None:
        env["type"] = type(exc).__name__
        env["message"] = str(exc)
        if tb:
            env["traceback"] = traceback.format_exc()
    if message is not None:
        env["message"] = message
    _send(env, lenient=True)
    return 1


def main():
    settings = json.loads(sys.argv[1])
    try:
        request = json.loads(sys.stdin.buffer.read())
        method = request["method"]
        args = request.get("args")
        if not isinstance(args, dict):
            args = {}
        pos = args.get("args", [])
        kw = args.get("kwargs", {})
        if not isinstance(pos, list) or not isinstance(kw, dict):
            return _fail("bad_request", message='args must be {"args": [...], "kwargs": {...}}')
    except Exception as exc:  # noqa: BLE001 - any malformed request is reported, not raised
        return _fail("bad_request", exc)

    for p in reversed(settings["python_path"]):
        sys.path.insert(0, p)
    try:
        module = importlib.import_module(settings["module"])
        cls = getattr(module, settings["class"])
        instance = cls(
            project_root=settings["project_root"],
            cache_dir=settings["cache_dir"],
            policy=settings["policy"],
        )
    except Exception as exc:  # noqa: BLE001
        return _fail("import_error", exc)

    if method.startswith("_"):
        return _fail("method_not_found", message=f"method {method!r} is private")
    func = getattr(instance, method, None)
    if func is None or not callable(func):
        return _fail("method_not_found", message=f"{settings['class']} has no method {method!r}")

    try:
        value = func(*pos, **kw)
        if inspect.isawaitable(value):
            value = asyncio.run(_await(value))
    except Exception as exc:  # noqa: BLE001
        sys.stdout.flush()
        return _fail("exception", exc)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        _send({"ok": True, "result": value})
    except (TypeError, ValueError) as exc:
        return _fail("bad_result", exc, tb=False)
    return 0


async def _await(value):
    return await value


if __name__ == "__main__":
    sys.exit(main())
