"""Table 3.2's comparison is at matched feature dimension (Sec. 3.3.1, "for a fair comparison")."""

from keras_fgvc.models import create_model
from keras_fgvc.training.experiments import get_config


def _pooled_dim(config, input_shape):
    kwargs = dict(config.model_kwargs)
    model = create_model(config.model, num_classes=10, input_shape=input_shape, **kwargs)
    return int(model.get_layer("pooling").output.shape[-1])


def test_fashion_cbp_and_kp_pool_to_the_same_dimension():
    cbp = _pooled_dim(get_config("fashion_pool_cbp"), (28, 28, 1))
    kp = _pooled_dim(get_config("fashion_pool_kp"), (28, 28, 1))
    assert cbp == kp == 1 + 128 + 3 * 4096


def test_cub_cbp_matches_vgg16_kernel_pooling_dimension():
    cbp = get_config("cub_compact_bilinear_vgg16").model_kwargs["pooling_kwargs"]["dims"]
    assert cbp == 1 + 512 + 3 * 4096  # 12801, the dissertation's VGG-16 kernel pooling size
