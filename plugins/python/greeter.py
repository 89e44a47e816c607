"""A UPM-style Python class plugin: a class named like the plugin, one sync and one async method."""
import asyncio


class Greeter:
    def __init__(self, project_root, cache_dir, policy):
        self.project_root = project_root
        self.cache_dir = cache_dir
        self.policy = policy

    def greet(self, name, punctuation="!"):
        """Sync method: upm calls it with args {"args": [name], "kwargs": {...}}."""
        print(f"greeting {name}")  # goes to the captured stdout, never into the result
        return {"greeting": f"Hello, {name}{punctuation}"}

    async def greet_later(self, name, delay_ms=10):
        """Async method: the runner awaits the coroutine."""
        await asyncio.sleep(delay_ms / 1000)
        return {"greeting": f"Hello, {name}, after {delay_ms} ms"}

    def _private(self):
        return "never callable through upm"
