/* The pod sandbox's "pause" process for distro's test images: holds the pod's namespaces,
 * reaps zombies (it is PID 1 when the pod shares its PID namespace), and exits on
 * SIGTERM/SIGINT. Built static by hack/build-test-images: gcc -static -Os. */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_stop(int sig) { (void)sig; _exit(0); }

static void on_child(int sig) {
  (void)sig;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(void) {
  struct sigaction stop = {.sa_handler = on_stop};
  struct sigaction child = {.sa_handler = on_child, .sa_flags = SA_NOCLDSTOP | SA_RESTART};
  if (getpid() != 1) {
    /* Not PID 1: still fine, the kernel delivers SIGTERM/SIGINT by default anyway. */
  }
  if (sigaction(SIGINT, &stop, NULL) < 0 || sigaction(SIGTERM, &stop, NULL) < 0 ||
      sigaction(SIGCHLD, &child, NULL) < 0)
    return 1;
  for (;;)
    pause();
  return 0;
}
