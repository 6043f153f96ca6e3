"""``minicnn explore --checkpoint X``: a local web page for a trained model."""
import sys

from .common import CLIError, HelpFormatter, integer, positive_int, positive_number, prepare_run

DESCRIPTION = """\
Serve a web page for a trained model (a checkpoint written by minicnn train):
pick a test image or upload a PNG/JPEG of any size (centre-cropped to a
square, then resized to the model's input), and see the top-5 classes, the
activation maps of any layer (click a channel to enlarge it), saliency,
guided backprop, Grad-CAM and occlusion for any class, and FGSM or PGD with
an eps slider (the perturbation magnified, the new prediction).

Everything runs on this machine's CPU; the page's script and style ship
with minicnn, nothing is fetched from the internet. The page is served on
127.0.0.1 (this machine only) unless --host says otherwise. Ctrl-C or
SIGTERM stops the server."""

EXAMPLES = """\
examples:
  minicnn explore --checkpoint runs/simple_cnn/last.npz            # then open http://127.0.0.1:8000/
  minicnn explore --checkpoint runs/resnet20/best.npz --port 8080
  minicnn explore --checkpoint runs/simple_cnn/last.npz --host 0.0.0.0   # reachable from other machines"""



def host_warning(host):
    """The warning printed for ``--host HOST`` when it is not this machine's loopback address, else None."""
    import ipaddress

    try:
        local = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:                 # a host name: it may resolve to any interface
        local = False
    if local:
        return None
    return (f"minicnn explore: warning: --host {host} makes the page reachable from other machines; anyone who "
            f"reaches it can run the model and upload images")


def add_parser(sub):
    p = sub.add_parser("explore", help="a local web page for a trained model: activations, saliency, attacks",
                       description=DESCRIPTION, epilog=EXAMPLES, formatter_class=HelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a checkpoint written by minicnn train (.npz)")
    p.add_argument("--data", default=None,
                   help="where the test images are (default: the run's --data, else minicnn train's default "
                        "places; without any, only uploads)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on; anything but 127.0.0.1 lets other machines use the page")
    p.add_argument("--port", type=integer, default=8000, help="port to listen on (0: any free port)")
    p.add_argument("--workers", type=positive_int, default=4,
                   help="requests handled at once; more get '503 busy' at once")
    p.add_argument("--max-upload-mb", type=positive_number, default=8, metavar="MB",
                   help="largest image file accepted, in MiB")
    p.add_argument("--gallery", type=positive_int, default=40, help="test images offered on the page")
    p.add_argument("--quiet", action="store_true", help="do not print one line per request")
    p.set_defaults(func=run)


def run(args):
    import json

    from ..checkpoint import load_checkpoint, load_model
    from ..errors import CheckpointError, TrainingError
    from ..explore import Explorer, make_server, serve
    from ..report import load_test_set

    prepare_run(args)              # process settings (single-threaded BLAS: one image per request is small work)
    if not 0 <= args.port <= 65535:
        raise CLIError(f"--port {args.port}: must be 0 to 65535")
    try:
        config = json.loads(str(load_checkpoint(args.checkpoint).get("config", "{}")) or "{}")
        model = load_model(args.checkpoint)
    except CheckpointError as e:
        raise CLIError(f"--checkpoint: {e}") from None
    try:
        test, where = load_test_set(args.data, config)
        if list(test.classes) != list(model.classes):
            print(f"minicnn explore: warning: the test set at {where} has other classes than the model; "
                  f"only uploads are offered", file=sys.stderr)
            test = None
    except TrainingError as e:
        print(f"minicnn explore: warning: no test images ({str(e).splitlines()[0]}); only uploads are offered",
              file=sys.stderr)
        test = None
    explorer = Explorer(model, test, gallery=args.gallery, name=config.get("model"))
    if host_warning(args.host):
        print(host_warning(args.host), file=sys.stderr)
    log = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    try:
        server = make_server(explorer, args.host, args.port, workers=args.workers,
                             max_upload=int(args.max_upload_mb * 2**20), log=log)
    except OSError as e:
        raise CLIError(f"cannot listen on {args.host}:{args.port} ({e.strerror or e}); try another --port") from None
    print(f"minicnn explore: serving {explorer.name} at {server.url} (Ctrl-C to stop)", flush=True)
    how = serve(server)
    print(f"minicnn explore: stopped ({how})", flush=True)
    return 0
