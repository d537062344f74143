"""train.py's config layering and its errors for bad keys, values and names."""
import pytest

pytestmark = pytest.mark.integration


def parse(argv):
    import train

    return train.setup_cfg(train.build_parser().parse_args(argv))


def test_trainer_nodes_are_declared_next_to_their_code():
    from trainers.config import get_cfg_default

    cfg = get_cfg_default()
    assert cfg.TRAINER.COOP.N_CTX == 16 and cfg.TRAINER.COOP.CLASS_TOKEN_POSITION == "end"
    assert cfg.TRAINER.ZSCLIP.TEMPLATES == "dataset"
    assert cfg.DATASET.SUBSAMPLE_CLASSES == "all" and cfg.MODEL.BACKBONE.PATH == ""


def test_layers_override_in_order_and_seed_zero_is_kept(tmp_path):
    dataset_yaml = tmp_path / "d.yaml"
    dataset_yaml.write_text('DATASET:\n  NAME: "OxfordPets"\nOPTIM:\n  LR: 0.1\n  MAX_EPOCH: 7\nSEED: 5\n')
    trainer_yaml = tmp_path / "vit_test.yaml"
    trainer_yaml.write_text("OPTIM:\n  LR: 0.2\n  WEIGHT_DECAY: 0.01\nSEED: 6\n")
    cfg = parse(["--dataset-config-file", str(dataset_yaml), "--config-file", str(trainer_yaml),
                 "--trainer", "CoOp", "--seed", "0", "OPTIM.WEIGHT_DECAY", "0.03"])
    assert cfg.OPTIM.MAX_EPOCH == 7  # dataset yaml
    assert cfg.OPTIM.LR == 0.2  # trainer yaml over dataset yaml
    assert cfg.SEED == 0  # CLI over both, and 0 is a seed like any other
    assert cfg.OPTIM.WEIGHT_DECAY == 0.03  # trailing overrides last
    assert cfg.CONFIG_NAME == "vit_test"
    assert parse(["--dataset-config-file", str(dataset_yaml), "--trainer", "CoOp"]).SEED == 5


def test_bad_keys_values_and_names_are_explained(tmp_path):
    from trainers.config import ConfigError

    base = ["--dataset-config-file", "configs/datasets/oxford_pets.yaml", "--trainer", "CoOp"]
    with pytest.raises(ConfigError, match="Unknown config key OPTIM.LRR .*Did you mean OPTIM.LR"):
        parse(base + ["OPTIM.LRR", "0.1"])
    with pytest.raises(ConfigError, match="Unknown config key TRAINER.COOP.NCTX .*TRAINER.COOP.N_CTX"):
        parse(base + ["TRAINER.COOP.NCTX", "4"])
    with pytest.raises(ConfigError, match="OPTIM.MAX_EPOCH"):
        parse(base + ["OPTIM.MAX_EPOCH", "many"])
    with pytest.raises(ConfigError, match="KEY VALUE pairs"):
        parse(base + ["OPTIM.LR"])
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("OPTIM:\n  LEARNING_RATE: 0.1\n")
    with pytest.raises(ConfigError, match=r"Unknown config key OPTIM.LEARNING_RATE \(config file"):
        parse(base + ["--config-file", str(bad_yaml)])
    with pytest.raises(ConfigError, match="does not exist"):
        parse(base + ["--config-file", str(tmp_path / "missing.yaml")])
    with pytest.raises(ConfigError, match="Unknown trainer 'Coop'. Did you mean CoOp"):
        parse(["--dataset-config-file", "configs/datasets/oxford_pets.yaml", "--trainer", "Coop"])
    with pytest.raises(ConfigError, match="Unknown dataset 'OxfordPet'. Did you mean OxfordPets"):
        parse(["--trainer", "CoOp", "DATASET.NAME", "OxfordPet"])
