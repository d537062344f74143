"""Property: any KEY VALUE override either applies or fails with a ConfigError naming the key, never with an
unexplained traceback."""
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.integration

KNOWN_KEYS = [
    "OPTIM.LR", "OPTIM.MAX_EPOCH", "OPTIM.NAME", "OPTIM.WARMUP_EPOCH", "OPTIM.WARMUP_TYPE", "OPTIM.LR_SCHEDULER",
    "OPTIM.MOMENTUM", "OPTIM.WEIGHT_DECAY", "DATASET.NUM_SHOTS", "DATASET.SUBSAMPLE_CLASSES", "INPUT.SIZE",
    "INPUT.TRANSFORMS", "DATALOADER.TRAIN_X.BATCH_SIZE", "DATALOADER.NUM_WORKERS", "TRAIN.CHECKPOINT_FREQ",
    "TRAINER.COOP.N_CTX", "TRAINER.COOP.CSC", "TRAINER.COOP.CTX_INIT", "TRAINER.COOP.PREC",
    "TRAINER.COOP.CLASS_TOKEN_POSITION", "TRAINER.ZSCLIP.TEMPLATES", "MODEL.BACKBONE.NAME", "SEED",
]
# A word that begins with "-" is an option to the command line, not a KEY: argparse reads it as one (its own usage
# error, or an abbreviation of an option such as --u for --unless-finished), before any override is looked at.
keys = st.one_of(st.sampled_from(KNOWN_KEYS),
                 st.text(min_size=1, max_size=20).filter(lambda k: k.strip() and not k.startswith("-")),
                 st.sampled_from(KNOWN_KEYS).map(lambda k: k + "X"))
values = st.one_of(
    st.integers(-10**6, 10**6).map(str), st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(["True", "False", "None", "()", "(224, 224)", "(0, 0)", "[1, 2]", "{}", "'x'", "sgd", "end",
                     "fp16", "bf16", "ensemble", "base", "(", "1e-3", "-1", "0", "[", "'"]),
    st.text(max_size=15),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(keys, values), min_size=1, max_size=3))
def test_overrides_apply_or_fail_with_the_key_named(pairs):
    import train
    from trainers.config import ConfigError

    opts = [item for pair in pairs for item in pair]
    argv = ["--dataset-config-file", "configs/datasets/oxford_pets.yaml", "--trainer", "CoOp", *opts]
    try:
        train.setup_cfg(train.build_parser().parse_args(argv))
    except ConfigError as error:
        message = str(error)
        assert any(key in message or key.strip() in message for key, _ in pairs), message
