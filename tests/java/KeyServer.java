// A stand-in for Wowza Streaming Engine's StreamLock / keystore HTTPS: loads the PKCS#12
// keystore certkeeper writes (as Wowza's VHost.xml KeyStorePath with KeyStoreType PKCS12
// does, once at start), and serves the AES-128 key of an encrypted HLS stream over HTTPS.
//
// java KeyServer KEYSTORE PASSWORD_FILE PORT PIDFILE
import com.sun.net.httpserver.HttpsConfigurator;
import com.sun.net.httpserver.HttpsServer;
import java.io.FileInputStream;
import java.net.InetSocketAddress;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.KeyStore;
import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SSLContext;

public class KeyServer {
    public static void main(String[] args) throws Exception {
        char[] password = Files.readAllLines(Path.of(args[1])).get(0).toCharArray();
        KeyStore store = KeyStore.getInstance("PKCS12");
        try (FileInputStream in = new FileInputStream(args[0])) {
            store.load(in, password);
        }
        KeyManagerFactory keys = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
        keys.init(store, password);
        SSLContext tls = SSLContext.getInstance("TLS");
        tls.init(keys.getKeyManagers(), null, null);
        HttpsServer server = HttpsServer.create(new InetSocketAddress("127.0.0.1", Integer.parseInt(args[2])), 16);
        server.setHttpsConfigurator(new HttpsConfigurator(tls));
        byte[] hlsKey = "0123456789abcdef".getBytes();
        server.createContext("/live/key", exchange -> {
            exchange.getResponseHeaders().add("Content-Type", "application/octet-stream");
            exchange.sendResponseHeaders(200, hlsKey.length);
            exchange.getResponseBody().write(hlsKey);
            exchange.close();
        });
        server.start();
        Files.writeString(Path.of(args[3]), Long.toString(ProcessHandle.current().pid()));
    }
}
