"""The neutral graph IR (imports nothing else of the project): graphs under construction with lazy initializers,
and their writer (`ir.onnx_io.write_onnx`, which needs onnx)."""
