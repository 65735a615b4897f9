import sys

from llmcomm_tests.commands import main

sys.exit(main())
