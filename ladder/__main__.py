from ladder.cli import main

raise SystemExit(main())
