"""warm-python: Ansible's module interpreter for localhost, with the Azure SDKs already imported.

Every azure.azcollection task starts a Python that imports ``azure_rm_common``, which imports
some thirty Azure SDK packages: about 3.5 s of CPU before the module sends its first request,
on every task (a 130-task ``site.yml`` spends most of its CPU there). ``warm-python`` removes
that cost without changing what runs:

- ``warm-python`` (a shell launcher installed next to the venv's ``python``) is set as
  ``ansible_python_interpreter``. The script of an Azure module that calls Azure and exits
  (``AnsiballZ_azure_rm_*.py`` and this collection's own, listed in the launcher) goes to
  :mod:`warm_python.client`; anything else is ``exec``'d by the real interpreter unchanged.
- :mod:`warm_python.server` is a Python started with the client's exact environment that has
  imported the SDKs and ansible-core's module side (the controller's own installation, of which
  a payload carries a copy), then forgotten every collection's code, so that each module
  imports that from its AnsiballZ payload as a fresh interpreter would. For each module it forks a child
  that takes the client's stdin, stdout and stderr, argv, environment, working directory and
  umask, runs the script as ``__main__`` and reports its exit status. Signals sent to the
  client reach the child; a client that dies takes its child with it.
- One server per environment (and venv state): a different ``environment:`` or a new package
  gets a new server, never a stale one. The first module of an environment runs cold while its
  server warms; a server exits after an idle period. Any failure to reach a server falls back
  to the real interpreter, so the worst case is today's speed.

``WARM_PYTHON=0`` turns it off.
"""
