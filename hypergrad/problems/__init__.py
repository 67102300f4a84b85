"""Built-in problems; their data ships offline (scikit-learn's bundled sets, synthetic data)."""

from hypergrad.problems.logistic import logistic
from hypergrad.problems.mlp import (MLP, corrupted_examples, flip_labels, mlp_classifier, nnx_problem,
                                   noisy_mlp_classifier)
from hypergrad.problems.ridge import ridge, ridge_solution, ridge_trained_weights

__all__ = ["MLP", "corrupted_examples", "flip_labels", "logistic", "mlp_classifier", "nnx_problem",
           "noisy_mlp_classifier", "ridge", "ridge_solution", "ridge_trained_weights"]

from hypergrad.problems.finetune import (  # noqa: E402
    finetune, group_labels, group_rates, group_sgd, layer_groups, problem_groups, scale_by_group_rate, warmup_ramp)
from hypergrad.problems.pretrained import (  # noqa: E402
    cache_dir, digits_transfer, pretrained_digits_cnn, pretrained_digits_mlp)
from hypergrad.problems.cnn import CNN  # noqa: E402
from hypergrad.problems.presets import (  # noqa: E402
    PRESETS, finetune_space, preset, preset_corrupted_examples, sgd_momentum_schedule)

__all__ += ["PRESETS", "finetune_space", "preset", "preset_corrupted_examples", "sgd_momentum_schedule"]
__all__ += ["cache_dir", "digits_transfer", "finetune", "group_labels", "group_rates", "group_sgd", "layer_groups",
            "pretrained_digits_mlp", "problem_groups", "scale_by_group_rate", "warmup_ramp"]
__all__ += ["CNN", "pretrained_digits_cnn"]
