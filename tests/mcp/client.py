"""Drives `upm mcp` with the official MCP Python SDK's client (PyPI `mcp`, 2.x).

    client.py SCENARIO UPM CONFIG [ARG...]

prints one JSON object: what the client saw. tests/mcp/main.rs runs it with the
virtualenv .ci/run makes (target/mcp-clients/venv) and checks what it printed.
"""

import json
import os
import sys
import time

import anyio
import mcp.client.session as sdk_session
from mcp import Client, ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client


def server(upm, config):
    return StdioServerParameters(command=upm, args=["mcp", "--config", config, "--parallel", "4"])


def dump(result):
    return result.model_dump(mode="json", by_alias=True, exclude_none=True)


def processes_with(marker):
    """Host pids whose command line holds `marker` (this client's own aside: its
    arguments hold it too)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            found.append(int(pid))
    return found


async def basic(upm, config):
    """initialize (auto mode: the 2026 discover probe is refused, then the handshake),
    tools/list, a call, a schema error as isError, results checked by the SDK against
    the output schemas upm declares."""
    out = {}
    async with Client(server(upm, config)) as client:
        init = client.session.initialize_result
        out["protocol_version"] = init.protocol_version
        out["server_name"] = init.server_info.name
        out["capabilities"] = dump(init.capabilities)
        out["tools"] = [dump(t) for t in (await client.list_tools()).tools]
        out["add"] = dump(await client.call_tool("Calc__add", {"a": 2, "b": 3}))
        out["schema_error"] = dump(await client.call_tool("Calc__add", {"a": "two", "b": 3}))
        out["list"] = dump(await client.call_tool("Calc__list", {"args": [1, 2, 3]}))
        out["bad_output"] = dump(await client.call_tool("Calc__bad_output", {"a": 1, "b": 1}))
        out["loose"] = dump(await client.call_tool("Loose__anything", {"x": [1]}))
        out["dotted"] = dump(await client.call_tool("acme-calc__add", {"a": 1, "b": 1}))
        try:
            await client.call_tool("No__such", {})
            out["unknown_tool"] = "answered"
        except Exception as e:  # the SDK raises an MCPError for a JSON-RPC error
            out["unknown_tool"] = f"{type(e).__name__}: {e}"
    return out


async def legacy(upm, config, version):
    """The handshake offering an older revision: the SDK offers its newest one, so the
    offer is set to `version` (the SDK's own module constant)."""
    sdk_session.LATEST_HANDSHAKE_VERSION = version
    async with stdio_client(server(upm, config)) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            tools = (await session.list_tools()).tools
            call = await session.call_tool("Calc__add", {"a": 20, "b": 22})
            return {
                "protocol_version": init.protocol_version,
                "tool_count": len(tools),
                "add": dump(call),
            }


async def parallel(upm, config, seconds):
    """Three calls in flight at once, each a plugin sleeping `seconds`."""
    out = {"calls": []}
    async with Client(server(upm, config)) as client:
        await client.list_tools()

        async def one(i):
            t0 = time.monotonic()
            r = await client.call_tool("Calc__sleep", {"seconds": float(seconds)})
            out["calls"].append({"i": i, "start": t0, "end": time.monotonic(), "result": dump(r)})

        t0 = time.monotonic()
        async with anyio.create_task_group() as tg:
            for i in range(3):
                tg.start_soon(one, i)
        out["total"] = time.monotonic() - t0
    return out


async def cancel(upm, config, marker):
    """A call cancelled by the client (it abandons the request: the SDK sends
    notifications/cancelled) while its plugin runs; its processes must be gone within
    a second, while the session is still open (so not because the connection ended)."""
    out = {}
    async with Client(server(upm, config)) as client:
        await client.list_tools()
        with anyio.move_on_after(30) as waited:
            async with anyio.create_task_group() as tg:

                async def call():
                    out["answer"] = dump(await client.call_tool("Calc__hang", {"marker": marker}))

                tg.start_soon(call)
                # The plugin (a shell and its two sleeps) running, seen from the host.
                for _ in range(500):
                    if len(processes_with(marker)) >= 3:
                        break
                    await anyio.sleep(0.01)
                out["running_before"] = processes_with(marker)
                cancelled_at = time.monotonic()
                tg.cancel_scope.cancel()
        out["timed_out"] = waited.cancelled_caught
        gone_after = None
        while time.monotonic() - cancelled_at < 5:
            if not processes_with(marker):
                gone_after = time.monotonic() - cancelled_at
                break
            await anyio.sleep(0.01)
        out["gone_after"] = gone_after
        # The session goes on.
        out["after"] = dump(await client.call_tool("Calc__add", {"a": 1, "b": 2}))
    return out


def main():
    scenario, upm, config, *rest = sys.argv[1:]
    run = {
        "basic": lambda: basic(upm, config),
        "legacy": lambda: legacy(upm, config, *rest),
        "parallel": lambda: parallel(upm, config, *rest),
        "cancel": lambda: cancel(upm, config, *rest),
    }[scenario]
    print(json.dumps(anyio.run(run)))


if __name__ == "__main__":
    main()
