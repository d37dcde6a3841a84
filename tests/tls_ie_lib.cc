// tests/tls_ie_lib.cc — a shared module whose TLS uses the initial-exec
// model (compiled with -ftls-model=initial-exec, so glibc gives it a block
// in every thread's static TLS area when it is dlopen'ed: DF_STATIC_TLS).
// Loaded after start-up by sys_klt_test and sys_interpose_test (issue 9
// #18: on 15df0bc a raw KLT that existed before the dlopen read 0 here).
extern "C" {
__attribute__((tls_model("initial-exec"))) thread_local int weft_test_ie_value = 4242;
__attribute__((tls_model("initial-exec"))) thread_local long weft_test_ie_array[4] = {1, 2, 3, 4};
__attribute__((tls_model("initial-exec"))) thread_local int weft_test_ie_bss[8];  // zero-initialised

// The calling thread's copies: the value, the sum of the array, and the
// sum of the zero-initialised part (which must be 0 on a fresh thread).
int weft_test_ie_read() { return weft_test_ie_value; }
long weft_test_ie_array_sum() { return weft_test_ie_array[0] + weft_test_ie_array[1] + weft_test_ie_array[2] + weft_test_ie_array[3]; }
int weft_test_ie_bss_sum() {
  int s = 0;
  for (int v : weft_test_ie_bss) s += v;
  return s;
}
int* weft_test_ie_address() { return &weft_test_ie_value; }
}
