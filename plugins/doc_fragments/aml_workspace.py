# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


class ModuleDocFragment:
    # The Azure ML workspace a module works in.
    DOCUMENTATION = r"""
options:
  resource_group:
    description: Resource group of the workspace.
    type: str
    required: true
  workspace:
    description: Azure ML workspace name.
    type: str
    required: true
"""
