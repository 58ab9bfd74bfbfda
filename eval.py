"""Test a saved run's checkpoint again (``run=<run dir> [checkpoint=best|last] [data=...]``); the
same as the ``gradprobe-eval`` command."""

from gradprobe.evaluate import main

if __name__ == "__main__":
    main()
