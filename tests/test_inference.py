import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplab_tf.evaluation import inference

NUM_CLASSES = 4


def tiny_model(kernel_size=3, symmetric=False, seed=0):
    """Two 'same' convolutions: logits at the input size, like DeepLabV3 after its upsampling."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((None, None, 3))
    features = keras.layers.Conv2D(8, kernel_size, padding="same", activation="relu")(inputs / 255.0)
    logits = keras.layers.Conv2D(NUM_CLASSES, kernel_size, padding="same")(features)
    model = keras.Model(inputs, logits)
    if symmetric:  # kernels equal to their left-right mirror: the model commutes with flips
        for layer in model.layers:
            if isinstance(layer, keras.layers.Conv2D):
                kernel, bias = layer.get_weights()
                layer.set_weights([(kernel + kernel[:, ::-1]) / 2, bias])
    return model


class Recorder:
    """Wraps a model and records the spatial sizes it is called on."""

    def __init__(self, model):
        self.model, self.sizes = model, []

    def __call__(self, images, training=False):
        self.sizes.append(tuple(images.shape[1:3]))
        return self.model(images, training=training)


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def random_images(shape=(2, 65, 49), seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (*shape, 3)).astype(np.float32)


def flip(x):
    return np.asarray(x)[:, :, ::-1]


def test_scaled_size_keeps_32k_plus_1_sizes():
    sizes = [int(inference.scaled_size(513, s)) for s in (0.5, 0.75, 1.0, 1.25, 1.75)]
    assert sizes == [257, 385, 513, 641, 897]
    assert int(inference.scaled_size(49, 0.75)) == 37


def test_resize_bilinear_aligns_corners():
    ramp = tf.reshape(tf.range(5, dtype=tf.float32), [1, 1, 5, 1])
    resized = inference.resize_bilinear(ramp, [1, 9])
    np.testing.assert_allclose(resized.numpy().ravel(), np.arange(9) / 2)


def test_single_scale_without_flip_is_exactly_single_scale_inference(model):
    images = random_images()
    logits = model(images, training=False)
    labels = inference.predict(model, images)
    assert labels.dtype == tf.int32 and labels.shape == (2, 65, 49)
    np.testing.assert_array_equal(labels.numpy(), np.argmax(logits.numpy(), -1))
    probabilities = inference.predict(model, images, output="probabilities")
    np.testing.assert_array_equal(probabilities.numpy(), tf.nn.softmax(logits).numpy())


def test_multi_scale_runs_each_scale_and_flip_at_the_documented_sizes(model):
    recorder = Recorder(model)
    scales = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
    probabilities = inference.predict(recorder, random_images(), scales=scales, flip=True,
                                      output="probabilities")
    assert recorder.sizes == [size for size in [(33, 25), (49, 37), (65, 49), (81, 61), (97, 73), (113, 85)]
                              for _ in range(2)]
    assert probabilities.shape == (2, 65, 49, NUM_CLASSES)
    np.testing.assert_allclose(probabilities.numpy().sum(-1), 1.0, rtol=1e-5)
    labels = inference.predict(model, random_images(), scales=scales, flip=True)
    np.testing.assert_array_equal(labels.numpy(), np.argmax(probabilities.numpy(), -1))


def test_multi_scale_averages_probabilities_of_resized_logits(model):
    images = random_images((1, 33, 33))
    expected = []
    for scale, size in ((0.5, 17), (1.5, 49)):
        scaled = inference.resize_bilinear(images, [size, size])
        for logits in (model(scaled), flip(model(flip(scaled)))):
            expected.append(tf.nn.softmax(inference.resize_bilinear(logits, [33, 33])).numpy())
    probabilities = inference.predict(model, images, scales=(0.5, 1.5), flip=True, output="probabilities")
    np.testing.assert_allclose(probabilities.numpy(), np.mean(expected, axis=0), atol=1e-6)


def test_flip_averaging_commutes_with_flipping_the_input(model):
    images = random_images()
    probabilities = inference.predict(model, images, flip=True, output="probabilities")
    of_flipped = inference.predict(model, flip(images), flip=True, output="probabilities")
    # Equal up to float rounding (the softmax kernel's vectorised and scalar paths differ in the last bit).
    np.testing.assert_allclose(flip(of_flipped), probabilities.numpy(), atol=1e-6)


def test_flip_symmetric_model_gives_the_same_result_flipped():
    symmetric = tiny_model(symmetric=True, seed=1)
    images = random_images()
    plain = inference.predict(symmetric, images, output="probabilities").numpy()
    of_flipped = inference.predict(symmetric, flip(images), output="probabilities")
    np.testing.assert_allclose(flip(of_flipped), plain, atol=1e-6)
    flipped = inference.predict(symmetric, images, flip=True, output="probabilities").numpy()
    np.testing.assert_allclose(flipped, plain, atol=1e-6)
    # A left-right symmetric image gets a left-right symmetric segmentation.
    mirror = np.concatenate([images[:, :, :24], flip(images[:, :, :25])], axis=2)
    labels = inference.predict(symmetric, mirror, scales=(0.75, 1.0), flip=True).numpy()
    np.testing.assert_array_equal(labels, flip(labels))


def test_sliding_window_equals_whole_image_for_a_pointwise_model():
    pointwise = Recorder(tiny_model(kernel_size=1))
    images = random_images()
    windowed = inference.sliding_window_logits(pointwise, images, window_size=24)
    assert pointwise.sizes == [(24, 24)] * 12  # rows start at 0, 16, 32, 41; columns at 0, 16, 25
    np.testing.assert_allclose(windowed.numpy(), pointwise.model(images).numpy(), atol=1e-5)
    labels = inference.predict(pointwise, images, scales=(0.5, 1.0), flip=True, window_size=(32, 24))
    expected = inference.predict(pointwise.model, images, scales=(0.5, 1.0), flip=True)
    np.testing.assert_array_equal(labels.numpy(), expected.numpy())


def test_sliding_window_on_an_image_within_the_window_is_the_model(model):
    images = random_images((1, 33, 17))
    windowed = inference.sliding_window_logits(model, images, window_size=33)
    np.testing.assert_array_equal(windowed.numpy(), model(images).numpy())


def test_predict_in_tf_function_with_dynamic_shapes(model):
    options = dict(scales=(0.5, 1.0, 1.5), flip=True, window_size=40)
    traced = tf.function(lambda images: inference.predict(model, images, **options),
                         input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    for shape in ((1, 33, 33), (2, 65, 49)):
        images = random_images(shape)
        labels = traced(images)
        assert labels.shape == shape
        np.testing.assert_array_equal(labels.numpy(), inference.predict(model, images, **options).numpy())


def test_rejects_bad_arguments(model):
    with pytest.raises(ValueError, match="output"):
        inference.predict(model, random_images(), output="logits")
    with pytest.raises(ValueError, match="scales"):
        inference.predict(model, random_images(), scales=())


def pooled_model(seed=0):
    """tiny_model plus an image-level branch (global average pooling), as DeepLabV3's ASPP has: its
    logits everywhere depend on the whole input, padding included."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((None, None, 3))
    features = keras.layers.Conv2D(8, 3, padding="same", activation="relu")((inputs - 127.5) / 127.5)
    pooled = keras.layers.GlobalAveragePooling2D(keepdims=True)(features)
    logits = keras.layers.Conv2D(NUM_CLASSES, 3, padding="same")(features + pooled)
    return keras.Model(inputs, logits)


def canvas_by_hand(images, canvas, value):
    """images padded bottom/right to `canvas` with the RGB `value`, in NumPy."""
    height, width = images.shape[1:3]
    padded = np.empty((images.shape[0], *canvas, 3), np.float32)
    padded[...] = np.float32(value)
    padded[:, :height, :width] = images
    return padded


BETA_PAD = (127.5, 127.5, 127.5)


def test_pad_to_canvas_keeps_the_image_and_pads_with_the_exact_value():
    images = random_images((1, 33, 41))
    padded = inference.pad_to_canvas(images, (65, 49), (123.15, 115.9, 103.06)).numpy()
    np.testing.assert_array_equal(padded, canvas_by_hand(images, (65, 49), (123.15, 115.9, 103.06)))


def test_eval_crop_labels_are_the_padded_canvas_by_hand_cropped_back():
    model = pooled_model()
    images = random_images((1, 33, 41))
    labels = inference.predict(model, images, eval_crop_size=(65, 65), pad_value=BETA_PAD)
    canvas_logits = model(canvas_by_hand(images, (65, 65), BETA_PAD), training=False).numpy()
    assert labels.shape == (1, 33, 41)
    np.testing.assert_array_equal(labels.numpy(), np.argmax(canvas_logits, -1)[:, :33, :41])
    # The protocol matters: the image-level branch sees the canvas, not the image alone.
    native = inference.predict(model, images, output="probabilities")
    on_canvas = inference.predict(model, images, output="probabilities", eval_crop_size=(65, 65),
                                  pad_value=BETA_PAD)
    assert np.abs(native.numpy() - on_canvas.numpy()).max() > 1e-3


def test_eval_crop_with_multi_scale_and_flip_scales_the_canvas():
    model = pooled_model()
    recorder = Recorder(model)
    images = random_images((1, 33, 41))
    scales = (0.5, 1.0, 1.5)
    got = inference.predict(recorder, images, scales=scales, flip=True, output="probabilities",
                            eval_crop_size=(65, 65), pad_value=BETA_PAD)
    # Scaled sizes are those of the 65x65 canvas, as the release computed them.
    assert recorder.sizes == [size for size in [(33, 33), (65, 65), (97, 97)] for _ in range(2)]
    want = inference.predict(model, canvas_by_hand(images, (65, 65), BETA_PAD), scales=scales, flip=True,
                             output="probabilities")
    assert got.shape == (1, 33, 41, NUM_CLASSES)
    np.testing.assert_allclose(got.numpy(), want.numpy()[:, :33, :41], atol=1e-6)


def test_eval_crop_traced_with_dynamic_shapes():
    model = pooled_model()
    predict = tf.function(lambda x: inference.predict(model, x, eval_crop_size=(65, 65), pad_value=BETA_PAD),
                          input_signature=[tf.TensorSpec([1, None, None, 3], tf.float32)])
    for size in ((33, 41), (65, 20)):
        images = random_images((1, *size))
        want = np.argmax(model(canvas_by_hand(images, (65, 65), BETA_PAD)).numpy(), -1)[:, :size[0], :size[1]]
        np.testing.assert_array_equal(predict(images).numpy(), want)


def test_an_image_larger_than_the_eval_crop_is_an_error_naming_the_flag(model):
    with pytest.raises(tf.errors.InvalidArgumentError, match="larger than the eval crop size 65x49.*--eval_crop_size"):
        inference.predict(model, random_images((1, 65, 50)), eval_crop_size=(65, 49))
    with pytest.raises(ValueError, match="eval_crop_size"):
        inference.predict(model, random_images((1, 9, 9)), eval_crop_size=(65,))
