"""Code that runs inside a worker or the template process, never in the supervisor's loop.

Modules here import only the standard library, uvicorn, starlette and each other
(tests/test_layout.py enforces it), so a worker loads nothing of the supervisor. The supervisor may
import the wire formats kept here (the launch arguments, the heartbeat reader), which are light.
"""
