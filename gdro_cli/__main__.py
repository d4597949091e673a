from gdro_cli.main import main

raise SystemExit(main())
