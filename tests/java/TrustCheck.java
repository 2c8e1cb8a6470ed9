// A Java TLS client that trusts one root only, as a Java player or server with its own trust
// store does: it builds the path from the chain the server presents and that root, and fetches
// no missing issuer. Exit 0 when the handshake verifies, 1 (with Java's reason) when not.
//
// java TrustCheck.java ROOT.pem HOST PORT SNI

import java.io.FileInputStream;
import java.security.KeyStore;
import java.security.cert.CertificateFactory;
import java.util.List;
import javax.net.ssl.SNIHostName;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLParameters;
import javax.net.ssl.SSLSocket;
import javax.net.ssl.TrustManagerFactory;

public class TrustCheck {
    public static void main(String[] args) throws Exception {
        KeyStore trusted = KeyStore.getInstance(KeyStore.getDefaultType());
        trusted.load(null, null);
        try (FileInputStream root = new FileInputStream(args[0])) {
            trusted.setCertificateEntry("root", CertificateFactory.getInstance("X.509").generateCertificate(root));
        }
        TrustManagerFactory trust = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
        trust.init(trusted);
        SSLContext context = SSLContext.getInstance("TLS");
        context.init(null, trust.getTrustManagers(), null);
        try (SSLSocket socket = (SSLSocket) context.getSocketFactory().createSocket(args[1], Integer.parseInt(args[2]))) {
            socket.setSoTimeout(10_000);
            SSLParameters parameters = socket.getSSLParameters();
            parameters.setServerNames(List.of(new SNIHostName(args[3])));
            parameters.setEndpointIdentificationAlgorithm("HTTPS");
            socket.setSSLParameters(parameters);
            socket.startHandshake();
            System.out.println("verified");
        } catch (Exception e) {
            System.out.println("refused: " + e.getMessage());
            System.exit(1);
        }
    }
}
