// tests/tls_lib.cc — a shared module with thread_local state, loaded with
// dlopen() by sys_klt_test after start-up (and after KLTs exist). Its TLS is
// ordinary global-dynamic TLS, reached through __tls_get_addr and the DTV.
#include <atomic>

thread_local int weft_test_tls_value = 777;
extern "C" int* weft_test_tls_address() { return &weft_test_tls_value; }

// A thread_local object with a non-trivial destructor: touching it on a
// thread registers the destructor (__cxa_thread_atexit_impl with this
// module's handle); when the thread exits the destructor counts itself and
// adds the object's value to a sum, so a test can tell whose object was
// destroyed.
namespace {

std::atomic<int> dtor_count{0};
std::atomic<long> dtor_value_sum{0};

struct Counted {
  int value = 0;
  ~Counted() {
    dtor_value_sum.fetch_add(value);
    dtor_count.fetch_add(1);
  }
};

thread_local Counted counted;

}  // namespace

// Touches (and so constructs) the calling thread's Counted object.
extern "C" int* weft_test_tls_counted_value() { return &counted.value; }
extern "C" int weft_test_tls_dtor_count() { return dtor_count.load(); }
extern "C" long weft_test_tls_dtor_value_sum() { return dtor_value_sum.load(); }
