from mab.cli import main

raise SystemExit(main())
