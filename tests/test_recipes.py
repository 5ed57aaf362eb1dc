"""The recipes: every file parses and validates, shapes have the parameter counts they claim.

Fast: nothing trains here (models are built on the meta device).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hf_mixture.errors import HFMixtureError
from hf_mixture.models import build_model, count_parameters
from hf_mixture.recipe import load_train_config, training_arguments

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
TRAINING = sorted([*RECIPES.glob("*.yaml"), *RECIPES.glob("family/*.yaml")])
ACCELERATE = sorted(RECIPES.glob("accelerate/*.yaml"))
DEEPSPEED = sorted(RECIPES.glob("deepspeed/*.json"))
# Values the Trainer owns: written once, in the training YAML, and "auto" in DeepSpeed.
TRAINER_OWNED = ("train_micro_batch_size_per_gpu", "train_batch_size",
                 "gradient_accumulation_steps", "gradient_clipping")


def _params(path: Path, *overrides: str) -> int:
    cfg = load_train_config(path, list(overrides))
    return count_parameters(build_model(cfg.model, device="meta"))


def _cpu(path: Path, tmp_path: Path, *extra: str):
    """The recipe's TrainingArguments as they would be built on this CPU machine."""
    cfg = load_train_config(path, [f"training.output_dir={tmp_path}", "training.use_cpu=true",
                                   "training.optim=adamw_torch", *extra])
    return cfg, training_arguments(cfg)


def test_every_recipe_is_found():
    names = {p.relative_to(RECIPES).as_posix() for p in RECIPES.rglob("*") if p.is_file()}
    assert {"tiny_cpu.yaml", "proxy.yaml", "pretrain_1b.yaml", "family/llama_150m.yaml",
            "family/llama_410m.yaml", "family/llama_1b.yaml", "accelerate/1gpu.yaml",
            "accelerate/ddp.yaml", "accelerate/zero2.yaml", "accelerate/zero3.yaml",
            "accelerate/multinode.yaml", "accelerate/cpu_2proc.yaml", "deepspeed/zero2.json",
            "deepspeed/zero3.json", "slurm/train.sbatch", "README.md"} <= names


@pytest.mark.parametrize("path", [*TRAINING, *ACCELERATE, *DEEPSPEED,
                                  RECIPES / "slurm" / "train.sbatch"], ids=lambda p: p.name)
def test_each_recipe_starts_with_its_launch_command(path):
    if path.suffix == ".json":
        first = json.loads(path.read_text())["_comment"]
    else:
        lines = path.read_text().splitlines()
        first = lines[1] if lines[0].startswith("#!") else lines[0]
        assert first.startswith("# "), f"{path.name} does not start with a comment"
    assert "accelerate launch" in first or "sbatch" in first
    rel = path.relative_to(RECIPES).as_posix()
    # The command names this file, or the training recipe that this launcher config runs.
    assert f"recipes/{rel}" in first or "-m hf_mixture train recipes/" in first


def test_readme_lists_every_recipe():
    readme = (RECIPES / "README.md").read_text()
    for path in [*TRAINING, *ACCELERATE, *DEEPSPEED, RECIPES / "slurm" / "train.sbatch"]:
        assert path.relative_to(RECIPES).as_posix() in readme, path.name


@pytest.mark.parametrize("path", TRAINING, ids=lambda p: p.name)
def test_training_recipes_build_training_arguments(path, tmp_path):
    cfg, args = _cpu(path, tmp_path)
    assert args.max_steps >= 1 and args.ignore_data_skip is True
    assert cfg.data.seq_len <= (cfg.model_fields.get("max_position_embeddings") or 10**9)


def test_pretrain_1b_is_the_llama_3_2_1b_shape(tmp_path):
    path = RECIPES / "pretrain_1b.yaml"
    cfg, args = _cpu(path, tmp_path)
    model = build_model(cfg.model, device="meta")
    n = count_parameters(model)
    assert 1.20e9 <= n <= 1.27e9, n                    # Llama-3.2-1B: 1.236B
    c = model.config
    assert (c.num_hidden_layers, c.hidden_size, c.intermediate_size) == (16, 2048, 8192)
    assert (c.num_attention_heads, c.num_key_value_heads) == (32, 8)
    assert c.tie_word_embeddings and c._attn_implementation == "sdpa"
    assert cfg.data.seq_len == 2048 and args.bf16
    assert args.activation_checkpointing is False and args.lr_scheduler_type.value.startswith("cosine")
    # The gradient (activation) checkpointing switch is one override.
    _, on = _cpu(path, tmp_path, "training.activation_checkpointing=true")
    assert on.activation_checkpointing is True


def test_family_shapes_and_shared_hyperparameters(tmp_path):
    counts = {p.stem: _params(p) for p in sorted(RECIPES.glob("family/*.yaml"))}
    assert 140e6 <= counts["llama_150m"] <= 160e6, counts
    assert 390e6 <= counts["llama_410m"] <= 430e6, counts
    assert 1.0e9 <= counts["llama_1b"] <= 1.15e9, counts
    differ = {"learning_rate", "warmup_steps", "max_steps", "output_dir"}
    configs = [load_train_config(p) for p in sorted(RECIPES.glob("family/*.yaml"))]
    base = configs[0]
    for cfg in configs[1:]:
        for key in set(base.training) | set(cfg.training):
            if key not in differ:
                assert base.training.get(key) == cfg.training.get(key), (cfg.source, key)
        assert cfg.data == base.data
        assert cfg.model_fields["vocab_size"] == base.model_fields["vocab_size"]
        # 20 tokens per parameter, within 10%.
    for cfg, n in zip(configs, [counts[p.stem] for p in sorted(RECIPES.glob("family/*.yaml"))]):
        tokens = cfg.training["max_steps"] * 256 * cfg.data.seq_len
        assert 18 <= tokens / n <= 22, (cfg.source, tokens / n)


def test_proxy_shapes():
    path = RECIPES / "proxy.yaml"
    assert 58e6 <= _params(path, "model.shape=62m") <= 66e6
    assert 330e6 <= _params(path, "model.shape=350m") <= 370e6


def test_wsd_schedule_switch(tmp_path):
    """The WSD override of pretrain_1b builds a warmup-stable-decay schedule."""
    import torch
    from transformers.optimization import get_scheduler

    _, args = _cpu(RECIPES / "pretrain_1b.yaml", tmp_path, "training.max_steps=100",
                   "training.warmup_steps=10", "training.lr_scheduler_type=warmup_stable_decay",
                   "training.lr_scheduler_kwargs={num_decay_steps: 20, min_lr_ratio: 0.1}")
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=args.learning_rate)
    sched = get_scheduler(args.lr_scheduler_type, opt, num_warmup_steps=args.warmup_steps,
                          num_training_steps=args.max_steps,
                          scheduler_specific_kwargs=args.lr_scheduler_kwargs)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    peak = args.learning_rate
    assert lrs[0] < 0.2 * peak                          # warming up
    assert all(abs(x - peak) < 1e-12 for x in lrs[10:80])  # stable
    assert lrs[-1] < 0.2 * peak and lrs[-1] >= 0.1 * peak - 1e-12   # decayed to the floor


@pytest.mark.parametrize("path", ACCELERATE, ids=lambda p: p.name)
def test_accelerate_configs_validate(path):
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    cfg = load_config_from_file(str(path))   # accelerate's own parser: unknown keys are errors
    if cfg.distributed_type == DistributedType.DEEPSPEED:
        ds = cfg.deepspeed_config
        json_path = RECIPES.parent / ds["deepspeed_config_file"]
        assert json_path.is_file()
        # With a config file accelerate refuses these keys: they live in the JSON.
        assert not {"gradient_accumulation_steps", "gradient_clipping", "zero_stage",
                    "offload_optimizer_device", "offload_param_device",
                    "zero3_save_16bit_model", "mixed_precision"} & set(ds)
        stage = json.loads(json_path.read_text())["zero_optimization"]["stage"]
        assert ds.get("zero3_init_flag", False) == (stage == 3)


def test_cpu_config_starts_two_processes():
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    cfg = load_config_from_file(str(RECIPES / "accelerate" / "cpu_2proc.yaml"))
    # `--cpu --num_processes 2` would start one process; MULTI_GPU + use_cpu starts two (gloo).
    assert cfg.distributed_type == DistributedType.MULTI_GPU
    assert cfg.use_cpu is True and cfg.num_processes == 2


@pytest.mark.parametrize("path", DEEPSPEED, ids=lambda p: p.name)
def test_deepspeed_json_trainer_values_are_auto(path):
    from accelerate.utils import DeepSpeedPlugin

    config = json.loads(path.read_text())
    for key in TRAINER_OWNED:
        assert config[key] == "auto", key
    assert config["bf16"]["enabled"] == "auto" and config["fp16"]["enabled"] == "auto"
    # The Trainer builds optimizer and scheduler (8-bit AdamW, WSD): none in the JSON.
    assert "optimizer" not in config and "scheduler" not in config
    plugin = DeepSpeedPlugin(hf_ds_config=config)   # accelerate's checks (no deepspeed needed)
    assert plugin.zero_stage == config["zero_optimization"]["stage"]


@pytest.mark.parametrize("path", DEEPSPEED, ids=lambda p: p.name)
def test_deepspeed_json_passes_deepspeed_checker(path, tmp_path):
    """With deepspeed installed: Trainer fills the autos, DeepSpeed's own config class checks."""
    pytest.importorskip("deepspeed", reason="deepspeed is an optional extra")
    from types import SimpleNamespace

    from deepspeed.runtime.config import DeepSpeedConfig
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    cfg, args = _cpu(RECIPES / "pretrain_1b.yaml", tmp_path)
    hf = HfTrainerDeepSpeedConfig(json.loads(path.read_text()))
    hf.trainer_config_process(args)
    hf.trainer_config_finalize(args, SimpleNamespace(config=SimpleNamespace(
        hidden_size=cfg.model_fields["hidden_size"])), args.max_steps)
    checked = DeepSpeedConfig(hf.config)
    assert checked.train_micro_batch_size_per_gpu == args.per_device_train_batch_size
    assert checked.gradient_accumulation_steps == args.gradient_accumulation_steps
    assert checked.gradient_clipping == args.max_grad_norm
    assert checked.zero_optimization_stage == hf.config["zero_optimization"]["stage"]


@pytest.mark.parametrize("override, message", [
    ("bogus.x=1", "unknown section"),
    ("model.hidden_sise=8", "hidden_sise"),
    ("training.learnin_rate=0.1", "learnin_rate"),
    ("model.shape=nope", "nope"),
    ("training.ignore_data_skip=false", "ignore_data_skip"),
    ("training.max_steps=0", "max_steps"),
    ("callbacks=[{weight: 1}]", "name"),
])
def test_bad_recipe_input_is_one_clear_error(override, message, tmp_path):
    with pytest.raises(HFMixtureError, match=message):
        cfg = load_train_config(RECIPES / "tiny_cpu.yaml",
                                [override, f"training.output_dir={tmp_path}"])
        build_model(cfg.model, vocab_size=500, device="meta")
        training_arguments(cfg)


def test_eight_bit_optimizer_needs_bitsandbytes_named(monkeypatch, tmp_path):
    import hf_mixture._imports as imports

    monkeypatch.setattr(imports, "is_available", lambda module: module != "bitsandbytes")
    cfg = load_train_config(RECIPES / "tiny_cpu.yaml",
                            ["training.optim=paged_adamw_8bit", f"training.output_dir={tmp_path}"])
    with pytest.raises(HFMixtureError, match=r"hf_mixture\[bitsandbytes\]"):
        training_arguments(cfg)


def _header(path: Path) -> str:
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line)
    return "\n".join(lines)


@pytest.mark.parametrize("path", TRAINING, ids=lambda p: p.name)
def test_recipe_header_states_the_parameter_count_it_builds(path):
    """Every recipe names a registered shape and its header says the count it builds to."""
    from hf_mixture.models import format_parameters, get_shape

    cfg = load_train_config(path)
    shape = get_shape(cfg.model["shape"])
    # vocab_size: auto takes the store's; the header states the count at the shape's vocabulary.
    n = count_parameters(build_model(cfg.model, vocab_size=shape.fields["vocab_size"],
                                     device="meta"))
    assert n == shape.parameters(), "the recipe overrides a field that changes the count"
    assert f"{format_parameters(n)} parameters" in _header(path), (path.name, format_parameters(n))
    assert shape.name in _header(path)


def test_proxy_header_states_both_climb_sizes():
    from hf_mixture.models import format_parameters

    header = _header(RECIPES / "proxy.yaml")
    assert f"({format_parameters(_params(RECIPES / 'proxy.yaml', 'model.shape=350m'))};" in header


@pytest.mark.parametrize("path", [p for p in TRAINING if p.name != "tiny_cpu.yaml"],
                         ids=lambda p: p.name)
def test_gpu_recipes_state_a_global_batch_not_an_accumulation(path, tmp_path):
    cfg = load_train_config(path)
    assert "gradient_accumulation_steps" not in cfg.training and cfg.training["global_batch_size"]
    _, args = _cpu(path, tmp_path)
    assert (args.per_device_train_batch_size * args.gradient_accumulation_steps
            == cfg.training["global_batch_size"])


def test_accumulation_is_derived_from_the_global_batch_and_world_size():
    from hf_mixture.recipe import gradient_accumulation_for

    assert gradient_accumulation_for(256, 16, 1) == 16
    assert gradient_accumulation_for(256, 16, 8) == 2
    assert gradient_accumulation_for(64, 32, 2) == 1
    with pytest.raises(HFMixtureError, match=r"global_batch_size 256 is not a multiple of "
                                             r"per_device_train_batch_size 16 x 3 process"):
        gradient_accumulation_for(256, 16, 3)
    with pytest.raises(HFMixtureError, match="global_batch_size must be an integer >= 1"):
        gradient_accumulation_for(True, 16, 1)


@pytest.mark.parametrize("extra, message", [
    (["training.gradient_accumulation_steps=2"], "both global_batch_size and gradient_accum"),
    (["training.global_batch_size=250"], "250 is not a multiple of per_device_train_batch_size 16"),
])
def test_bad_global_batch_is_one_clear_error(extra, message, tmp_path):
    with pytest.raises(HFMixtureError, match=message):
        _cpu(RECIPES / "pretrain_1b.yaml", tmp_path, *extra)


def test_dropping_the_global_batch_gives_back_a_hand_set_accumulation(tmp_path):
    _, args = _cpu(RECIPES / "pretrain_1b.yaml", tmp_path, "training.global_batch_size=null",
                   "training.gradient_accumulation_steps=1")
    assert args.gradient_accumulation_steps == 1


def test_recipe_saved_by_an_earlier_version_still_loads(tmp_path):
    """`recipe.yaml` beside older models holds `shape: null, shapes: {}`; a real table is named."""
    from hf_mixture.recipe import config_from_mapping

    old = {"model": {"shape": "cpu-tiny", "vocab_size": 64}, "shape": None, "shapes": {},
           "training": {"max_steps": 1, "output_dir": str(tmp_path)}}
    assert config_from_mapping(old).model_fields["hidden_size"] == 64
    with pytest.raises(HFMixtureError, match="'shapes' is gone; name a registered shape"):
        config_from_mapping({**old, "shapes": {"x": {"hidden_size": 8}}}, source="r.yaml")
