"""upm's runner for UPM-style Python class plugins.

upm starts it as `python3 -I -c <this file> <settings-json>` inside the
sandbox, with the request `{"method", "args", "request_id"}` on stdin.
As UPM's entrypoint did, inside one event loop: it imports the plugin's
module, instantiates the class as `Class(project_root=..., cache_dir=...,
policy=...)` (project_root and cache_dir from the args when the caller set
them, else upm's defaults: the caller's working directory and ".cache"),
renames a `version` kwarg to `version_constraint`, calls the method with
`*args["args"], **args["kwargs"]`, awaits it if it is a coroutine, and writes
one envelope to fd 3 (never stdout, so whatever the plugin prints stays in the
captured stdout/stderr and cannot corrupt the result):

    {"ok": true, "result": <value>}
    {"ok": false, "kind": "import_error"|"class_not_found"|"instantiation_failed"
                         |"method_not_found"|"exception"|"bad_request"|"bad_result",
     "type": "...", "message": "...", "traceback": "...", "method": "..."}

upm turns each kind into UPM's sentence. With `"introspect": [methods]` in the
settings (`upm migrate`), it calls nothing: it reports each method's
signature, its parameters' kinds, defaults and type hints, as a small type
vocabulary that upm turns into JSON Schemas.
"""
import asyncio
import importlib
import inspect
import json
import os
import sys
import traceback
import typing


def _send(envelope, lenient=False):
    # A result must be JSON as it is; only error details may fall back to repr().
    data = json.dumps(envelope, default=repr if lenient else None, allow_nan=False).encode("utf-8")
    fd = 3
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _fail(kind, exc=None, message=None, tb=True, **more):
    env = {"ok": False, "kind": kind}
    if exc is not None:
        env["type"] = type(exc).__name__
        env["message"] = str(exc)
        if tb:
            env["traceback"] = traceback.format_exc()
    if message is not None:
        env["message"] = message
    env.update(more)
    _send(env, lenient=True)
    return 1


async def _main(settings, request):
    method = request["method"]
    args = request.get("args")
    if not isinstance(args, dict):
        return _fail("bad_request", message='args must be {"args": [...], "kwargs": {...}}')
    pos = args.get("args", [])
    kw = args.get("kwargs", {})
    if not isinstance(pos, list) or not isinstance(kw, dict):
        return _fail("bad_request", message='args must be {"args": [...], "kwargs": {...}}')
    # As UPM: project_root as given (even null), cache_dir unless falsy.
    project_root = args["project_root"] if "project_root" in args else settings["project_root"]
    cache_dir = args.get("cache_dir") or settings["cache_dir"]

    for p in reversed(settings["python_path"]):
        sys.path.insert(0, p)
    try:
        module = importlib.import_module(settings["module"])
    except Exception as exc:  # noqa: BLE001 - UPM caught ImportError; any failure is one here
        return _fail("import_error", exc)
    cls = getattr(module, settings["class"], None)
    if not cls:
        return _fail("class_not_found", message="module %s has no attribute %r" % (settings["module"], settings["class"]))
    try:
        instance = cls(project_root=project_root, cache_dir=cache_dir, policy=settings["policy"])
    except Exception as exc:  # noqa: BLE001
        if settings.get("introspect") is None:
            return _fail("instantiation_failed", exc)
        instance = None
        init_error = "%s: %s" % (type(exc).__name__, exc)
    else:
        init_error = None

    if settings.get("introspect") is not None:
        return _introspect(cls, instance, init_error, settings["introspect"])

    if method.startswith("_"):
        return _fail("method_not_found", message="method %r is private" % method, method=method)
    func = getattr(instance, method, None)
    if not func or not callable(func):
        return _fail("method_not_found", message="%s has no method %r" % (settings["class"], method), method=method)
    # UPM's renaming, kept for its callers.
    if "version" in kw:
        kw["version_constraint"] = kw.pop("version")
    try:
        value = func(*pos, **kw)
        if inspect.isawaitable(value):
            value = await value
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


def _introspect(cls, instance, init_error, methods):
    out = {"class": cls.__name__, "instantiated": instance is not None, "methods": {}}
    if init_error is not None:
        out["init_error"] = init_error[:2000]
    for name in methods:
        out["methods"][name] = _describe_method(cls, instance, name)
    _send({"ok": True, "result": out})
    return 0


def _describe_method(cls, instance, name):
    target = instance if instance is not None else cls
    func = getattr(target, name, None)
    if not func or not callable(func):
        return {"found": False}
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError) as exc:
        return {"found": True, "error": "no signature: %s" % exc}
    params = list(sig.parameters.values())
    if instance is None and params and not isinstance(
        inspect.getattr_static(cls, name, None), staticmethod
    ):
        params = params[1:]  # the class's function: its first parameter is self
    try:
        hints = typing.get_type_hints(func)
    except Exception:  # noqa: BLE001 - an unresolvable forward reference: no hints
        hints = {}
    described = []
    for p in params:
        described.append(
            {
                "name": p.name,
                "kind": p.kind.name.lower(),
                "default": p.default is not inspect.Parameter.empty,
                "type": _describe_type(hints.get(p.name, p.annotation), 0),
            }
        )
    return {
        "found": True,
        "async": inspect.iscoroutinefunction(func),
        "signature": "%s%s" % (name, sig),
        "params": described,
    }


_SIMPLE = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}


def _describe_type(tp, depth):
    """A type hint in upm's small vocabulary ({"t": ...}); anything else is "any"."""
    if depth > 8 or tp is inspect.Parameter.empty or tp is typing.Any:
        return {"t": "any"}
    if tp is None:
        return {"t": "null"}
    if tp in _SIMPLE:
        return {"t": _SIMPLE[tp]}
    origin = typing.get_origin(tp)
    targs = typing.get_args(tp)
    if origin is typing.Union or (origin is not None and type(tp).__name__ == "UnionType"):
        return {"t": "union", "of": [_describe_type(a, depth + 1) for a in targs]}
    if origin is typing.Literal:
        values = [v for v in targs if v is None or isinstance(v, (str, int, float, bool))]
        return {"t": "enum", "values": values} if values else {"t": "any"}
    if origin is typing.Annotated:
        return _describe_type(targs[0], depth + 1) if targs else {"t": "any"}
    base = origin if origin is not None else tp
    try:
        from collections import abc

        if isinstance(base, type) and issubclass(base, (dict, abc.Mapping)):
            values = targs[1] if len(targs) == 2 else typing.Any
            return {"t": "object", "values": _describe_type(values, depth + 1)}
        if isinstance(base, type) and issubclass(base, tuple):
            if len(targs) == 2 and targs[1] is Ellipsis:
                return {"t": "array", "items": _describe_type(targs[0], depth + 1)}
            if targs:
                return {"t": "tuple", "items": [_describe_type(a, depth + 1) for a in targs]}
            return {"t": "array", "items": {"t": "any"}}
        if isinstance(base, type) and issubclass(base, (list, set, frozenset, abc.Sequence)) \
                and not issubclass(base, (str, bytes)):
            item = targs[0] if targs else typing.Any
            return {"t": "array", "items": _describe_type(item, depth + 1)}
    except TypeError:
        pass
    return {"t": "any", "python": repr(tp)[:200]}


def main():
    settings = json.loads(sys.argv[1])
    try:
        request = json.loads(sys.stdin.buffer.read())
        request["method"]
    except Exception as exc:  # noqa: BLE001 - any malformed request is reported, not raised
        return _fail("bad_request", exc)
    return asyncio.run(_main(settings, request))


if __name__ == "__main__":
    sys.exit(main())
