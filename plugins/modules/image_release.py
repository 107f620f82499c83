#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: image_release
short_description: The local steps of the image release pipeline (discovery, release.json, import.cfg)
version_added: "0.3.0"
description:
  - C(step=discover) finds the image folders (C(<docker_files_path>/<group>/<folder>/Dockerfile))
    whose files changed between I(base_ref) and HEAD of the git repository I(repo) (any file of
    the folder counts); when none changed, or without I(base_ref), every image. It checks the
    release tag (I(release_num) and I(release_tag) are mutually exclusive), reads each
    C(tests.json), writes C(release.json) and one build context per image (the folder, with
    C(Dockerfile.private) appended to C(Dockerfile)) under I(output_dir).
  - C(step=import_config) writes C(import.cfg), per image its staged name, the read-only
    principal's client id and the Key Vault URI of its secret (never the secret), and the
    production names C(<destination_prefix>/<folder>:<tag>) and C(:latest).
  - Runs on the controller; talks to no Azure service.
options:
  step: {description: What to do., type: str, required: true, choices: [discover, import_config]}
  repo: {description: The git repository., type: path, required: true}
  docker_files_path:
    description: Folders of images relative to I(repo) (a list, or one string with C(;) between).
    type: list
    elements: str
    default: [base_images/docker/public]
  base_ref: {description: Compare HEAD with this ref (C(origin/main)); empty means every image., type: str, default: ""}
  build_number: {description: Unique number of this pipeline run., type: str, required: true}
  staging_login_server: {description: Login server of the staging registry., type: str, required: true}
  release_num: {description: "The # of YYYYMMDD.v# (default 1).", type: int}
  release_tag: {description: The whole release tag instead., type: str}
  output_dir: {description: "Where release.json, import.cfg and the contexts go.", type: path, required: true}
  images: {description: The images of step=discover (for step=import_config)., type: list, elements: dict}
  destination_prefix: {description: Repository prefix in the production registry., type: str, default: public/azureml}
  reader_client_id: {description: Client id of the read-only principal on staging., type: str}
  reader_secret_uri: {description: Key Vault URI of that principal's secret., type: str}
author:
  - OpenAdapt evaluation infrastructure team (@OpenAdaptAI)
"""

EXAMPLES = r"""
- name: Discover the changed images
  openadapt.azure_eval.image_release:
    step: discover
    repo: "{{ release_repo }}"
    base_ref: origin/main
    build_number: "{{ release_build_number }}"
    staging_login_server: stagingacr.azurecr.io
    output_dir: ./release
"""

RETURN = r"""
images:
  description: The discovered images (group, folder, path, tests, untested, staged_tag, staged_image, context).
  returned: step=discover
  type: list
  elements: dict
tag:
  description: The release tag (YYYYMMDD.v# or release_tag).
  returned: always
  type: str
discovery:
  description: How the images were chosen (C(all) or C(changed since <ref>)).
  returned: step=discover
  type: str
path:
  description: The file written (release.json or import.cfg).
  returned: always
  type: str
"""

import datetime as dt
import json
from pathlib import Path

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.openadapt.azure_eval.plugins.module_utils import image_release as rel


def _roots(values: list[str]) -> list[str]:
    return [part.strip() for value in values for part in value.split(";") if part.strip()]


def main():
    module = AnsibleModule(
        argument_spec=dict(
            step=dict(type="str", required=True, choices=["discover", "import_config"]),
            repo=dict(type="path", required=True),
            docker_files_path=dict(
                type="list", elements="str", default=["base_images/docker/public"]
            ),
            base_ref=dict(type="str", default=""),
            build_number=dict(type="str", required=True),
            staging_login_server=dict(type="str", required=True),
            release_num=dict(type="int"),
            release_tag=dict(type="str"),
            output_dir=dict(type="path", required=True),
            images=dict(type="list", elements="dict"),
            destination_prefix=dict(type="str", default="public/azureml"),
            reader_client_id=dict(type="str"),
            reader_secret_uri=dict(type="str", no_log=False),
        ),
        supports_check_mode=True,
    )
    p = module.params
    repo, out = Path(p["repo"]), Path(p["output_dir"])
    try:
        tag = rel.release_tag(dt.date.today(), p["release_num"], p["release_tag"])
        if p["step"] == "discover":
            images, how = rel.discover(repo, _roots(p["docker_files_path"]), p["base_ref"] or None)
            head = rel._git(repo, "rev-parse", "HEAD").strip()
            document = rel.release_document(
                images,
                build_number=p["build_number"],
                how=how,
                head=head,
                staging=p["staging_login_server"],
                tag=tag,
            )
            listed = []
            for image, entry in zip(images, document["images"], strict=True):
                context = out / "contexts" / image.group / image.folder
                if not module.check_mode:
                    context = rel.build_context(repo, image, out / "contexts")
                listed.append(
                    {
                        **entry,
                        "staged_tag": image.staged_tag(p["build_number"]),
                        "context": str(context),
                    }
                )
            path = out / "release.json"
            if not module.check_mode:
                out.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(document, indent=2) + "\n")
            module.exit_json(changed=True, images=listed, tag=tag, discovery=how, path=str(path))
        images = [
            rel.Image(
                group=i["group"],
                folder=i["folder"],
                path=i["path"],
                has_private_dockerfile=bool(i.get("has_private_dockerfile")),
                tests=i.get("tests") or [],
                untested=bool(i.get("untested")),
            )
            for i in p["images"] or []
        ]
        entries = rel.import_config(
            images,
            build_number=p["build_number"],
            staging=p["staging_login_server"],
            destination_prefix=p["destination_prefix"],
            tag=tag,
            reader_client_id=p["reader_client_id"] or "",
            reader_secret_uri=p["reader_secret_uri"] or "",
        )
        path = out / "import.cfg"
        if not module.check_mode:
            out.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(entries, indent=2) + "\n")
        module.exit_json(changed=True, tag=tag, path=str(path), entries=entries)
    except rel.ReleaseError as err:
        module.fail_json(msg=str(err))


if __name__ == "__main__":
    main()
