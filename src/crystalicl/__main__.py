from crystalicl.cli import main

raise SystemExit(main())
