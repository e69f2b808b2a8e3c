"""Evaluation: BLEU of STREAM's captions, R-precision of text-image retrieval."""

from mirrorgan_tf.evaluation.bleu import corpus_bleu, modified_precision  # noqa: F401
from mirrorgan_tf.evaluation.evaluate import (  # noqa: F401
    compute_reference_statistics,
    evaluate,
    load_inception,
)
from mirrorgan_tf.evaluation.fid_inception import FIDInception  # noqa: F401
from mirrorgan_tf.evaluation.inception import (  # noqa: F401
    InceptionClassifier,
    StreamingInceptionScore,
    StreamingStatistics,
    frechet_distance,
    inception_score,
    kernel_inception_distance,
    load_features,
    load_statistics,
    save_statistics,
)
from mirrorgan_tf.evaluation.r_precision import r_precision  # noqa: F401
from mirrorgan_tf.evaluation.shapes_score import consistency_score, read_scene  # noqa: F401
