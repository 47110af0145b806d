from telehealth_client import signal_guard

signal_guard.install()  # before the imports: a SIGTERM meanwhile stops cleanly (exit 0), not 143

from telehealth_client.cli import main  # noqa: E402

raise SystemExit(main())
