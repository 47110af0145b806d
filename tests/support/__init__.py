"""What the tests share: the one recorder a test waits on (``recorder.py``), the one child-process
harness (``child.py``, with its agent and command flavours), and each test folder's helpers, one
module per folder (docs/architecture.md, "The tests")."""
