from mirrorgan_tf.data.attngan import AttnGANDataset, build_pipeline, shorten_caption  # noqa: F401
from mirrorgan_tf.data.safe_pickle import UnsafePickleError, load_pickle  # noqa: F401
from mirrorgan_tf.data.shapes import (  # noqa: F401
    SceneSpec,
    ShapesDataset,
    ShapeSpec,
    make_dataset,
    parse_caption,
    render,
    sample_scene,
    shapes_corpus,
    shapes_vocabulary,
)
from mirrorgan_tf.data.tfrecords import prepare_data, read_tfrecords, write_tfrecords  # noqa: F401
from mirrorgan_tf.data.tokenizer import Tokenizer, tokenize_text  # noqa: F401
from mirrorgan_tf.data.vocabulary import END_TOKEN, OOV_TOKEN, Vocabulary  # noqa: F401
