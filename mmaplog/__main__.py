from mmaplog.cli.commands import main

raise SystemExit(main())
