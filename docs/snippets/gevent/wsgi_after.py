# Served by: gunicorn -k greenbridge.integrations.gunicorn.Worker wsgi_after:app
import greenbridge

with greenbridge.patch_blocking():  # the worker patches nothing: say what is green
    import time


def app(environ, start_response):
    time.sleep(0.2)  # green: time was imported under patch_blocking()
    body = b"slept"
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
