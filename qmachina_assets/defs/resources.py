"""Resources shared by every stage."""

from pathlib import Path

import dagster as dg

from qmachina_assets.core.paths import lake_root


class LakeResource(dg.ConfigurableResource):
    """Root of the data lake (`QMACHINA_LAKE_DIR`, else `lake/` in the checkout)."""

    root: str

    @property
    def path(self) -> Path:
        return Path(self.root)


def default_resources() -> dict:
    return {"lake_res": LakeResource(root=str(lake_root()))}
