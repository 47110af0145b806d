from telehealth_client.cli import main

raise SystemExit(main())
