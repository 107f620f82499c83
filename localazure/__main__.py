from localazure.cli import main

raise SystemExit(main())
