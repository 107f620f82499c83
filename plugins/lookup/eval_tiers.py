# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: eval_tiers
short_description: The tiers an evaluation can run on
version_added: "0.1.0"
description:
  - The names of the tiers registered under C(plugins/module_utils/tiers/) of this collection
    that also have their playbook, C(playbooks/<tier>.yml); sorted.
  - A tier is one module there plus that playbook; C(site.yml) offers exactly these.
options: {}
"""

EXAMPLES = r"""
- name: Offer the tiers
  ansible.builtin.debug:
    msg: "{{ query('openadapt.azure_eval.eval_tiers') }}"
"""

RETURN = r"""
_raw:
  description: Tier names.
  type: list
  elements: str
"""

from pathlib import Path

from ansible.plugins.lookup import LookupBase

from ansible_collections.openadapt.azure_eval.plugins.module_utils.tiers import registry

PLAYBOOKS = Path(__file__).resolve().parents[2] / "playbooks"


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        return [name for name in registry.names() if (PLAYBOOKS / f"{name}.yml").is_file()]
