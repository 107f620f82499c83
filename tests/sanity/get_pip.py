"""Stand-in for pip's get-pip.py bootstrap script, for ansible-test's sanity virtual environments.

ansible-test downloads get-pip.py from its own file server unless a copy is cached under
~/.ansible/test/cache/; where that server cannot be reached (offline CI, a mirror of PyPI only),
`make sanity` caches this instead. Like get-pip.py it installs pip into the running interpreter
and then the packages named on its command line, from the package index pip is configured with;
the pip it starts from is the one the standard library bundles (ensurepip).
"""

import ensurepip
import os
import runpy
import sys

# get-pip.py's own switches; pip install has no such options.
OWN_OPTIONS = ("--no-setuptools", "--no-wheel")


def main():
    saved = dict(os.environ)
    ensurepip.bootstrap(upgrade=True)
    # ensurepip points PIP_CONFIG_FILE at /dev/null; the install below uses the user's pip config.
    os.environ.clear()
    os.environ.update(saved)
    sys.argv = ["pip", "install"] + [arg for arg in sys.argv[1:] if arg not in OWN_OPTIONS]
    runpy.run_module("pip", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
