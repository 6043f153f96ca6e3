"""minicnn.explore: a local web page for a trained model (``minicnn explore --checkpoint X``).

    from minicnn.explore import Explorer, make_server, serve
    server = make_server(Explorer(minicnn.load_model("runs/simple_cnn/last.npz"), test_set), port=8000)
    serve(server)               # until Ctrl-C or SIGTERM; open server.url in a browser

Pick a test image or upload a PNG/JPEG (centre-cropped to a square, then
resized to the model's input), and see the top-5 classes, the activation
maps of any layer, saliency / guided backprop / Grad-CAM / occlusion for any
class, and FGSM or PGD with an eps slider: the perturbation (magnified, the
factor shown) and the new prediction.

- ``app``: ``Explorer``, the model side: one method per panel, each input
  checked (``BadRequest`` carries the HTTP status and a message);
- ``server``: the standard library's ``ThreadingHTTPServer``: 127.0.0.1 by
  default, at most ``workers`` requests at once (503 beyond), an upload
  size limit, 4xx with a message for bad requests, every asset from the
  package's ``static/`` folder (nothing is fetched from elsewhere).
"""
from .app import ATTACKS, EPS_MAX, METHODS, BadRequest, Explorer
from .server import DEFAULT_MAX_UPLOAD, DEFAULT_WORKERS, ExploreServer, make_server, serve

__all__ = ["Explorer", "BadRequest", "METHODS", "ATTACKS", "EPS_MAX", "ExploreServer", "make_server", "serve",
           "DEFAULT_WORKERS", "DEFAULT_MAX_UPLOAD"]
