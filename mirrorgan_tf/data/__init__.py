from mirrorgan_tf.data.safe_pickle import UnsafePickleError, load_pickle  # noqa: F401
from mirrorgan_tf.data.tokenizer import Tokenizer, tokenize_text  # noqa: F401
from mirrorgan_tf.data.vocabulary import END_TOKEN, OOV_TOKEN, Vocabulary  # noqa: F401
