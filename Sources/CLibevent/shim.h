// Only event2 headers here: including <sys/socket.h> in this shim breaks the
// Swift import (Glibc already provides the socket API).
#include <event2/event.h>
#include <event2/util.h>
