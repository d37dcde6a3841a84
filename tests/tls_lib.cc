thread_local int weft_test_tls_value = 777;
extern "C" int* weft_test_tls_address() { return &weft_test_tls_value; }
