"""Train a GPT or a T5: `python scripts/train.py --config-name=megatron_gpt_config [overrides]`
(or `--config-name=megatron_t5_config`, or a NeMo 1.23 YAML with `--config-path`), or fine-tune
one on jsonl files: `--config-name=megatron_gpt_sft_config` / `megatron_t5_finetuning_config`
(docs/finetuning.md).

Hydra composes conf/<config-name>.yaml (or one in --config-path) with the overrides; the library
types it with the family's schema (T5 when the model section has encoder/decoder stacks; a
fine-tuning schema when model.data has NeMo's train_ds) and takes it from there. As with NeMo's scripts, Hydra writes no folder of its own and logs to
stdout. A user error (bad value, missing file, a run folder that would be overwritten, a
non-finite loss) ends with one message and exit status 1; set HYDRA_FULL_ERROR=1 for the
traceback.
"""

import os
import sys
import warnings

import hydra
from omegaconf import DictConfig, OmegaConf

from megatron_lite.config import register_configs, run_config
from megatron_lite.training import train
from megatron_lite.training.errors import USER_ERRORS, user_message

register_configs()
# Lightning 2.6 on torch >= 2.10 warns about its own use of a deprecated torch API on every run.
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")

# Hydra settings a NeMo YAML does not carry (ours do): the run folder is exp_manager's.
HYDRA_DEFAULTS = ("hydra.run.dir=.", "hydra.output_subdir=null", "hydra/job_logging=stdout")


@hydra.main(config_path="../conf", config_name="megatron_gpt_config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        train(run_config(OmegaConf.to_container(cfg, resolve=False)))
    except USER_ERRORS as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"Error: {user_message(error)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    given = {argument.split("=")[0] for argument in sys.argv[1:]}
    sys.argv += [default for default in HYDRA_DEFAULTS if default.split("=")[0] not in given]
    main()
