# A pyftpdlib FTP server for ftpfs' tests: serves argv[1] to anonymous and
# to user "user" (password "secret"), both read-write, on 127.0.0.1 at a
# port the kernel picks (printed as "PORT n"). argv[2], when not 0, limits
# downloads to that many bytes a second; every RETR is announced on stderr.
import logging
import sys

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler, ThrottledDTPHandler
from pyftpdlib.servers import FTPServer

root, throttle = sys.argv[1], int(sys.argv[2])
auth = DummyAuthorizer()
auth.add_anonymous(root, perm="elradfmwMT")
auth.add_user("user", "secret", root, perm="elradfmwMT")


class Handler(FTPHandler):
    authorizer = auth

    def ftp_RETR(self, file):
        sys.stderr.write("RETR-STARTED\n")
        sys.stderr.flush()
        return FTPHandler.ftp_RETR(self, file)


if throttle:
    class Throttled(ThrottledDTPHandler):
        write_limit = throttle
    Handler.dtp_handler = Throttled

logging.basicConfig(level=logging.ERROR)
server = FTPServer(("127.0.0.1", 0), Handler)
print("PORT", server.address[1], flush=True)
server.serve_forever()
