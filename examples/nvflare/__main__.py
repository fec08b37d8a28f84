import sys

from examples.nvflare.run import main

sys.exit(main())
