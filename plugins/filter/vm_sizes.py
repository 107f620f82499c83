# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the product knows about VM sizes, for the roles' preflight checks
(``plugins/module_utils/vm_sizes.py``): ``'Standard_D4s_v5' | openadapt.azure_eval.nested_virtualization``
is true, false, or none for a size outside the table."""

from __future__ import annotations

from ansible_collections.openadapt.azure_eval.plugins.module_utils import vm_sizes


class FilterModule:
    def filters(self):
        return {"nested_virtualization": vm_sizes.nested_virtualization}
