from mmaplog.cli import main

raise SystemExit(main())
