"""The app server the tests start: the same one the soak benchmark drives (benchmarks/app_server.py)."""

from benchmarks.app_server import REPO, AppServer, free_port

__all__ = ["REPO", "AppServer", "free_port"]
