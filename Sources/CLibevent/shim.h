// libevent's event-config.h defines _GNU_SOURCE. System headers first read
// after that define fd_set with other member names (fds_bits) than Swift's
// Glibc module sees (__fds_bits), and a file importing both modules fails to
// compile. So the system headers come first, with the default feature macros.
#include <sys/types.h>
#include <sys/time.h>
#include <sys/select.h>
#include <stdint.h>
#include <stdio.h>
#include <malloc.h>

#include <event2/event.h>
#include <event2/http.h>
#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>
