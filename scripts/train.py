"""Train a GPT or a T5: `python scripts/train.py --config-name=megatron_gpt_config [overrides]`
(or `--config-name=megatron_t5_config`).

Hydra composes conf/<config-name>.yaml (or one in --config-path) with the overrides into the
typed schema its defaults list names; the library takes it from there. A user error (bad value,
missing file, a run folder that would be overwritten) ends with one message and exit status 1;
set HYDRA_FULL_ERROR=1 for the traceback.
"""

import os
import sys
import warnings

import hydra
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from megatron_lite.config import SCHEMAS, RunConfig, register_configs, reject_unknown_keys
from megatron_lite.training import train

register_configs()
# Lightning 2.6 on torch >= 2.10 warns about its own use of a deprecated torch API on every run.
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


@hydra.main(config_path="../conf", config_name="megatron_gpt_config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        config = OmegaConf.to_object(cfg)
        if not isinstance(config, RunConfig):
            raise ValueError(
                f"the config's defaults list must start with one of {sorted(SCHEMAS)} (the typed schema)"
            )
        reject_unknown_keys(config)
        train(config)
    except (ValueError, FileNotFoundError, MissingMandatoryValue) as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"Error: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
